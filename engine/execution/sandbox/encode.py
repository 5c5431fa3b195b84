"""Leaf values and exceptions -> tagged plain data, in T, right after the test evaluated them.

Only exact builtin types cross (and subclasses that change nothing the host relies on, copied
through their base type's own C methods); anything else is "refused" with a message that becomes
the test's failure.

Sealed: T never calls the functions of this module as they are. ``sealed_parts()``, taken before
any candidate code runs, is an immutable tuple of their code objects, the constants and the C
builtins they use; after each piece of candidate code T makes fresh functions from it in a fresh
globals dict (candidate.py), so rebinding names here, in ``sys.modules`` or in a frame's globals
changes nothing the report depends on. So: no imports at call time, and every global a function
here uses is either another function here or a name ``sealed_parts`` lists."""

from __future__ import annotations

from .pristine import PRISTINE_BUILTINS as _builtins
from .pristine import exact_type as _type
from .pristine import exc_traceback as _exc_traceback
from .pristine import is_instance as _isinstance
from .pristine import length as _len
from .pristine import to_list as _list
from .pristine import to_str as _str
from .pristine import type_dict as _type_dict
from .pristine import type_mro as _type_mro
from .pristine import type_name as _type_name

_function_type = type(lambda: None)

# Standard-library value types with a faithful plain encoding (read through their own C accessors or
# slot descriptors captured here, before any candidate code runs; exact types only).
import datetime as _datetime  # noqa: E402
import decimal as _decimal  # noqa: E402
import enum as _enum  # noqa: E402
import fractions as _fractions  # noqa: E402
import pathlib as _pathlib  # noqa: E402
import uuid as _uuid  # noqa: E402

_object_getattribute = object.__getattribute__
_TIME_FIELDS = (
    (_datetime.date, "date", ("year", "month", "day")),
    (_datetime.datetime, "datetime", ("year", "month", "day", "hour", "minute", "second", "microsecond", "fold")),
    (_datetime.time, "time", ("hour", "minute", "second", "microsecond", "fold")),
    (_datetime.timedelta, "timedelta", ("days", "seconds", "microseconds")),
)
_TIME_GETTERS = tuple((kind, name, tuple(kind.__dict__[f] if f in kind.__dict__ else _datetime.date.__dict__[f]
                                         for f in fields)) for kind, name, fields in _TIME_FIELDS)
_TZINFO_GETTERS = ((_datetime.datetime, _datetime.datetime.__dict__["tzinfo"]),
                   (_datetime.time, _datetime.time.__dict__["tzinfo"]))
_TIMEZONE = (_datetime.timezone, _datetime.timezone.utcoffset, _datetime.timezone.tzname,
             _datetime.timedelta.__dict__["days"], _datetime.timedelta.__dict__["seconds"],
             _datetime.timedelta.__dict__["microseconds"])
_DECIMAL = (_decimal.Decimal, _decimal.Decimal.__str__)
_FRACTION = (_fractions.Fraction, _fractions.Fraction.__dict__["_numerator"], _fractions.Fraction.__dict__["_denominator"])
_UUID = (_uuid.UUID, _uuid.UUID.__dict__["int"])
_PATHS = ((_pathlib.PurePosixPath, "posix"), (_pathlib.PosixPath, "posix"), (_pathlib.PureWindowsPath, "windows"),
          (_pathlib.WindowsPath, "windows"))
_PATH_STR = _pathlib.PurePath.__str__
_ENUM = (_enum.Enum, type.__dict__["__qualname__"])
import abc as _abc  # noqa: E402

_TRUSTED_METAS = (_abc.ABCMeta, type(_enum.Enum))  # their hashing and comparison are type's own
MAX_NODES, MAX_DEPTH, MAX_TEXT, MAX_INT_BITS = 200_000, 100, 4 << 20, 1 << 17
TRUSTED_MODULES = frozenset({"collections", "enum", "os", "time", "builtins"})
# Methods the host-side skeleton relies on: a subclass overriding none of them compares exactly
# like its base type, so it may cross the boundary as that base type.
SEMANTIC_METHODS = frozenset({
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__hash__", "__bool__", "__len__",
    "__iter__", "__contains__", "__getitem__", "__float__", "__int__", "__index__", "__abs__",
    "__round__", "__neg__", "__pos__", "__str__", "__complex__", "__trunc__", "__add__", "__radd__",
    "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__floordiv__", "__mod__",
    "__reversed__", "keys", "items", "values",
})


class Refused(Exception):
    """A value that cannot cross the sandbox boundary; the message is the test's failure message."""


class TimeLimitExceeded(BaseException):
    """Raised in T by the supervisor's SIGUSR1 at the deadline, so a partial trace can be sent."""


def encode_value(value) -> tuple:
    """("value", tagged) for plain data, ("refused", message) for anything else; runs no code of
    the candidate's (the sealed runner's guard stops the report if any runs)."""
    try:
        return ("value", _encode(value, [MAX_NODES, MAX_TEXT], 0))
    except Refused as refused:
        return ("refused", refused.args[0])
    except RecursionError:
        return ("refused", "returned a value too deeply nested to compare outside the sandbox")


def encode_items(items) -> tuple:
    """A refused value the skeleton iterates, as the list of its items (``items`` is an exact list,
    made by the candidate's own iteration before the guard went back on)."""
    try:
        return ("value", ("l", [_encode(item, [MAX_NODES, MAX_TEXT], 1) for item in items]))
    except Refused as refused:
        return ("refused", refused.args[0])
    except RecursionError:
        return ("refused", "returned a value too deeply nested to compare outside the sandbox")


def encode_leaf(value, iterate: bool, truth: bool = False) -> tuple:
    """("value", tagged) for plain data; ("refused", message) for anything else."""
    budget = [MAX_NODES, MAX_TEXT]
    try:
        return ("value", _encode(value, budget, 0))
    except Refused as refused:
        if truth:  # only its truth is tested: a candidate could have returned True just as well
            return ("value", _encode(True if value else False, [MAX_NODES, MAX_TEXT], 0))
        if not iterate:
            return ("refused", refused.args[0])
    except RecursionError:
        return ("refused", "returned a value too deeply nested to compare outside the sandbox")
    # The skeleton iterates this leaf (set(f(x)), sorted(...)): do what that call would do here.
    items = _list(value)
    try:
        return ("value", ("l", [_encode(item, [MAX_NODES, MAX_TEXT], 1) for item in items]))
    except Refused as refused:
        return ("refused", refused.args[0])


_EXACT = {type(None): "n", bool: "b", int: "i", float: "f", complex: "c", str: "s", bytes: "y",
          list: "l", tuple: "t", set: "S", frozenset: "F", dict: "d"}
_BASE_ORDER = (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _encode(value, budget, depth):
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise Refused("returned a value too large to compare outside the sandbox")
    kind = _type(value)
    meta = _type(kind)
    if meta is not type and not any(meta is trusted for trusted in _TRUSTED_METAS):
        # a metaclass of the candidate's: hashing or comparing the class would run its code
        raise Refused("returned a value of a class with its own metaclass, which cannot be compared outside the sandbox")
    tag = _EXACT.get(kind)
    if tag is None:
        known = _stdlib_value(value, kind, budget, depth)
        if known is not None:
            return known
        value, tag = _as_base(value, kind)
    if tag in ("n",):
        return ("n",)
    if tag in ("b", "f"):
        return (tag, value)
    if tag == "i":
        if value.bit_length() > MAX_INT_BITS:
            raise Refused("returned an integer too large to compare outside the sandbox")
        return ("i", value)
    if tag == "c":
        return ("c", value.real, value.imag)
    if tag in ("s", "y"):
        budget[1] -= _len(value)
        if budget[1] < 0:
            raise Refused("returned a value too large to compare outside the sandbox")
        return (tag, value)
    if tag == "d":
        return ("d", [(_encode(k, budget, depth + 1), _encode(v, budget, depth + 1)) for k, v in dict.items(value)])
    return (tag, [_encode(item, budget, depth + 1) for item in value])


def _stdlib_value(value, kind, budget, depth):
    """The tagged form of a standard-library value type, or None when `kind` is none of them."""
    for time_kind, name, getters in _TIME_GETTERS:
        if kind is time_kind:
            fields = tuple(getter.__get__(value) for getter in getters)
            zone = None
            for zoned, getter in _TZINFO_GETTERS:
                if kind is zoned:
                    zone = _zone(getter.__get__(value))
            return ("D", name, fields, zone)
    if kind is _DECIMAL[0]:
        return ("Dc", _DECIMAL[1](value))
    if kind is _FRACTION[0]:
        numerator, denominator = _FRACTION[1].__get__(value), _FRACTION[2].__get__(value)
        if _type(numerator) is not int or _type(denominator) is not int:
            raise Refused("returned a Fraction with parts that are not integers")
        return ("Fr", numerator, denominator)
    if kind is _UUID[0]:
        number = _UUID[1].__get__(value)
        if _type(number) is not int:
            raise Refused("returned a UUID whose number is not an integer")
        return ("U", number)
    for path_kind, flavour in _PATHS:
        if kind is path_kind:
            text = _PATH_STR(value)
            if _type(text) is not str:
                raise Refused("returned a path whose text is not a string")
            return ("P", flavour, text)
    mro = _type_mro(kind)
    if _ENUM[0] in mro and not any(base in mro for base in _BASE_ORDER):
        return _enum_member(value, kind, mro, budget, depth)
    return None


def _zone(zone):
    """None, or a fixed-offset timezone as (seconds, microseconds, name); other tzinfo is refused."""
    if zone is None:
        return None
    kind, utcoffset, tzname, days, seconds, microseconds = _TIMEZONE
    if _type(zone) is not kind:
        raise Refused("returned a time with a time zone that cannot be compared outside the sandbox")
    offset = utcoffset(zone, None)
    name = tzname(zone, None)
    return (days.__get__(offset) * 86400 + seconds.__get__(offset), microseconds.__get__(offset), name)


def _enum_member(value, kind, mro, budget, depth):
    """An enum member as (module, class qualname, member name, value): the host compares members by
    that identity. A class that changes comparison (__eq__/__hash__) is refused."""
    for cls in mro[: mro.index(_ENUM[0])]:
        attributes = _type_dict(cls)
        if "__eq__" in attributes or "__hash__" in attributes:
            raise Refused("returned an enum member whose class defines its own comparison")
    state = _object_getattribute(value, "__dict__")
    name = dict.get(state, "_name_")
    module = _type_dict(kind).get("__module__")
    qualname = _ENUM[1].__get__(kind)
    if _type(name) is not str or _type(module) is not str or _type(qualname) is not str:
        raise Refused("returned an enum member without a plain name")
    return ("E", module, qualname, name, _encode(dict.get(state, "_value_"), budget, depth + 1))


def _as_base(value, kind):
    """A subclass of a builtin crosses as its base type when that changes nothing the host does."""
    try:
        mro = _type_mro(kind)
    except BaseException:  # noqa: BLE001
        mro = ()
    for base in _BASE_ORDER:
        if base in mro:
            if all(_harmless(cls) for cls in mro[: mro.index(base)]):
                return _convert(value, base), _EXACT[base]
            break
    try:
        name = _type_name(kind)
    except BaseException:  # noqa: BLE001
        name = "object"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    raise Refused(f"returned {article} {name[:60]}, which cannot be compared outside the sandbox")


def _harmless(cls) -> bool:
    try:
        attributes = _type_dict(cls)
        module = attributes.get("__module__")
        if _type(module) is str and module.split(".")[0] in TRUSTED_MODULES:
            return True
        return not any(name in attributes for name in SEMANTIC_METHODS)
    except BaseException:  # noqa: BLE001
        return False


def _convert(value, base):
    """Copy through the base type's own C methods, never the subclass's."""
    if base is dict:
        return dict(dict.items(value))
    if base is list:
        return list.copy(value)
    if base is tuple:
        return tuple.__getitem__(value, slice(None))
    if base in (set, frozenset):
        return base.copy(value)
    if base is str:
        return str.__str__(value)
    if base is bytes:
        return bytes.__getitem__(value, slice(None))
    if base is int:
        return int.__index__(value)
    if base is float:
        return float.__float__(value)
    if base is complex:
        return complex(complex.__dict__["real"].__get__(value), complex.__dict__["imag"].__get__(value))
    return value


def describe(error, message=None) -> tuple:
    """(type name, bounded message, "program"|"test"|"", line) of an exception raised in T.
    ``message``: str(error), taken by the sealed runner while candidate code may run (its
    ``__str__``); None: taken here."""
    try:
        kind = _type_name(_type(error))
    except BaseException:  # noqa: BLE001
        kind = "Exception"
    if _type(error) is TimeLimitExceeded:
        return ("TimeoutError", "interrupted at the time limit", "", 0)
    if message is None:
        try:
            message = _str(error)
        except BaseException:  # noqa: BLE001 - a __str__ that raises
            message = "<unprintable message>"
    if _type(message) is not str:
        message = ""
    if _len(message) > 300:
        message = message[:300] + "..."
    file, line = "", 0
    if any(_type(error) is syntax for syntax in _SYNTAX_ERRORS):  # exact types: plain slots
        filename = error.filename if _type(error.filename) is str else ""
        file, line = filename.strip("<>"), error.lineno if _type(error.lineno) is int else 0
        message = error.msg if _type(error.msg) is str else message
    try:
        tb = _exc_traceback(error)
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if name in ("<program>", "<test>"):
                file, line = name.strip("<>"), tb.tb_lineno
            tb = tb.tb_next
    except BaseException:  # noqa: BLE001
        pass
    return (kind[:100], message, file if file in ("program", "test") else "", line or 0)


# The C builtins the functions above reach through __builtins__ (types and functions of the
# interpreter itself: nothing the candidate can change).
_BUILTIN_NAMES = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "complex",
                  "bool", "slice", "type", "len", "all", "any", "hex", "isinstance", "BaseException",
                  "Exception", "RecursionError", "SyntaxError", "ValueError", "TypeError")
_CONSTANT_TYPES = (int, str, frozenset, tuple, type(None))
_SYNTAX_ERRORS = (SyntaxError, IndentationError, TabError)
_CAPTURED = ("_type", "_len", "_list", "_str", "_isinstance", "_type_dict", "_type_mro", "_type_name",
             "_exc_traceback", "TimeLimitExceeded", "_object_getattribute", "_PATH_STR", "_TRUSTED_METAS",
             "_SYNTAX_ERRORS")


def sealed_parts() -> tuple:
    """(function codes, constants, _EXACT items, builtins items): immutable, for T to rebuild
    this module's functions after candidate code has run."""
    namespace = globals()
    functions = tuple((name, value.__code__) for name, value in namespace.items()
                      if _type(value) is _function_type and value.__module__ == __name__ and name != "sealed_parts")
    constants = tuple((name, value) for name, value in namespace.items()
                      if (_type(value) in _CONSTANT_TYPES and not name.startswith("__")) or name in _CAPTURED)
    builtins_items = tuple((name, _builtins[name]) for name in _BUILTIN_NAMES)
    return functions, constants, tuple(_EXACT.items()), builtins_items
