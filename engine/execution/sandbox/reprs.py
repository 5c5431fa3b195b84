"""Bounded reprs: short, safe text for any value a traced program holds.

Strings are cut to about 60 characters, containers to about 8 items and 2 levels, any repr to 160
characters; huge ints are described rather than printed. A class whose ``__repr__`` is written in
the traced program is never asked for its repr (it may be slow, raise, loop or have side effects):
its instance attributes are shown instead. Nothing here raises. Standard library only (this runs
inside the sandbox).
"""

from __future__ import annotations

import itertools
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

__all__ = ["MAX_ITEMS", "MAX_STRING", "HIDDEN_TYPES", "ReprContext", "bounded_repr", "safe_repr",
           "exception_message", "type_name"]

MAX_STRING = 60
MAX_ITEMS = 8
MAX_DEPTH = 2
MAX_REPR = 160  # any single repr, after everything else

_NoneType = type(None)
# Shown by kind and name only (and not recorded as variables by the tracer).
HIDDEN_TYPES = frozenset({FunctionType, BuiltinFunctionType, ModuleType, type, MethodType})


def type_name(value) -> str:
    try:
        return type(value).__name__
    except Exception:  # pragma: no cover - a metaclass with a broken __name__
        return "object"


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    return text[:head] + "..." + text[len(text) - (limit - head - 3) :]


def _repr_str(value, limit=MAX_STRING) -> str:
    if len(value) <= limit:
        return repr(value)
    head = limit * 2 // 3
    tail = limit - head
    return repr(value[:head])[:-1] + "..." + repr(value[len(value) - tail :])[1:]


def _repr_int(value: int) -> str:
    if -(10**18) < value < 10**18:
        return repr(value)
    bits = value.bit_length()
    if bits > 400:  # str() of huge ints is slow (and limited since 3.11)
        return f"<int with about {int(bits * 0.30103) + 1} digits>"
    return _shorten(repr(value), MAX_STRING)


class ReprContext:
    """Holds what a repr needs to know about the traced program (its files)."""

    __slots__ = ("files", "class_cache")

    def __init__(self, files):
        self.files = files
        self.class_cache: dict[type, bool] = {}

    def defined_in_program(self, cls) -> bool:
        """A class whose __repr__ is written in the traced program: never call it (it may be slow,
        raise, loop, or have side effects); the instance's attributes are shown instead."""
        cached = self.class_cache.get(cls)
        if cached is None:
            cached = False
            try:
                method = cls.__repr__
                code = getattr(method, "__code__", None)
                cached = code is not None and code.co_filename in self.files
            except Exception:
                cached = True
            self.class_cache[cls] = cached
        return cached


_NO_FILES = ReprContext(frozenset())


def _items_repr(items, total, depth, ctx, head=MAX_ITEMS - 2):
    """Items of a sequence: all of them when few, else the first ones, a count, and the last two."""
    if total <= MAX_ITEMS:
        return ", ".join(_repr(x, depth, ctx) for x in items)
    shown = [_repr(x, depth, ctx) for x in items[:head]]
    shown.append(f"...{total - head - 2} more...")
    shown.extend(_repr(x, depth, ctx) for x in items[-2:])
    return ", ".join(shown)


def _sequence_items(value):
    total = len(value)
    if total <= MAX_ITEMS:
        return list(value), total
    if isinstance(value, (list, tuple, str, bytes, bytearray)):
        return list(value[: MAX_ITEMS - 2]) + list(value[-2:]), total
    head = list(itertools.islice(value, MAX_ITEMS - 2))
    tail = list(itertools.islice(reversed(value), 2))[::-1] if hasattr(value, "__reversed__") else []
    return head + tail, total


def _unordered_repr(value, depth, ctx):
    total = len(value)
    shown = [_repr(x, depth, ctx) for x in itertools.islice(value, MAX_ITEMS)]
    if total > MAX_ITEMS:
        shown.append(f"...{total - MAX_ITEMS} more")
    return ", ".join(shown)


def _dict_repr(value, depth, ctx):
    total = len(value)
    shown = [f"{_repr(k, depth, ctx)}: {_repr(v, depth, ctx)}" for k, v in itertools.islice(value.items(), MAX_ITEMS)]
    if total > MAX_ITEMS:
        shown.append(f"...{total - MAX_ITEMS} more")
    return "{" + ", ".join(shown) + "}"


def _instance_repr(value, depth, ctx):
    """`<Node val=1, next=<Node>>`: attributes read without running code of the program."""
    cls = type(value)
    name = getattr(cls, "__name__", "object")
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:
        attributes = None
    if not isinstance(attributes, dict) or not attributes or depth <= 0:
        return f"<{name}>"
    shown = [f"{k}={_repr(v, depth - 1, ctx)}" for k, v in itertools.islice(attributes.items(), MAX_ITEMS)]
    if len(attributes) > MAX_ITEMS:
        shown.append("...")
    return f"<{name} " + ", ".join(shown) + ">"


def _repr(value, depth, ctx) -> str:
    cls = type(value)
    if cls is int:
        return _repr_int(value)
    if cls is str:
        return _repr_str(value)
    if cls is bool or cls is float or cls is _NoneType or cls is complex or cls is range:
        return repr(value)
    if cls is list:
        if depth <= 0:
            return f"[...{len(value)} items]" if value else "[]"
        items, total = _sequence_items(value)
        return "[" + _items_repr(items, total, depth - 1, ctx) + "]"
    if cls is tuple:
        if depth <= 0:
            return f"(...{len(value)} items)" if value else "()"
        items, total = _sequence_items(value)
        inner = _items_repr(items, total, depth - 1, ctx)
        return "(" + inner + ("," if total == 1 else "") + ")"
    if cls is dict:
        if depth <= 0:
            return f"{{...{len(value)} items}}" if value else "{}"
        return _dict_repr(value, depth - 1, ctx)
    if cls is set or cls is frozenset:
        prefix = "frozenset(" if cls is frozenset else ""
        if not value:
            return "set()" if cls is set else "frozenset()"
        if depth <= 0:
            return f"{prefix}{{...{len(value)} items}}" + (")" if prefix else "")
        return prefix + "{" + _unordered_repr(value, depth - 1, ctx) + "}" + (")" if prefix else "")
    if cls is bytes or cls is bytearray:
        text = _repr_str(bytes(value[: MAX_STRING * 2]), MAX_STRING)
        return text if cls is bytes else f"bytearray({text})"
    if cls in HIDDEN_TYPES:
        kind = "module" if cls is ModuleType else "class" if cls is type else "function"
        return f"<{kind} {getattr(value, '__name__', '?')}>"
    return _other_repr(value, cls, depth, ctx)


def _fields_repr(name, pairs, depth, ctx) -> str:
    """`Point(x=1, y=2)` for namedtuples and dataclasses, with bounded field reprs."""
    if depth <= 0:
        return f"{name}(...)"
    shown = [f"{k}={_repr(v, depth - 1, ctx)}" for k, v in itertools.islice(pairs, MAX_ITEMS)]
    return f"{name}(" + ", ".join(shown) + ")"


def _dataclass_pairs(value, fields):
    for field_name in fields:
        try:
            yield field_name, object.__getattribute__(value, field_name)
        except Exception:
            yield field_name, "?"


def _other_repr(value, cls, depth, ctx) -> str:
    """Subclasses of containers (Counter, defaultdict, deque, namedtuples), dataclasses, objects."""
    name = getattr(cls, "__name__", "object")
    if isinstance(value, tuple) and isinstance(getattr(cls, "_fields", None), tuple):  # a namedtuple
        return _fields_repr(name, zip(cls._fields, value), depth, ctx)
    fields = getattr(cls, "__dataclass_fields__", None)
    if isinstance(fields, dict) and not ctx.defined_in_program(cls):  # its generated __repr__ is unbounded
        return _fields_repr(name, _dataclass_pairs(value, fields), depth, ctx)
    own_repr = ctx.defined_in_program(cls)
    if isinstance(value, dict) and (own_repr or cls.__repr__ is dict.__repr__ or name in ("Counter", "OrderedDict", "defaultdict")):
        if depth <= 0:
            return f"{name}({{...{len(value)} items}})"
        return f"{name}({_dict_repr(value, depth - 1, ctx)})"
    if name == "deque" or (isinstance(value, list) and (own_repr or cls.__repr__ is list.__repr__)):
        if depth <= 0:
            return f"{name}([...{len(value)} items])"
        items, total = _sequence_items(value)
        return f"{name}([" + _items_repr(items, total, depth - 1, ctx) + "])"
    if own_repr or cls.__repr__ is object.__repr__:
        return _instance_repr(value, depth, ctx)
    try:  # library reprs (Fraction, Decimal, datetime, exceptions, enums): trusted, but bounded
        text = repr(value)
    except Exception:
        return f"<{name} object>"
    if not isinstance(text, str):
        return f"<{name} object>"
    return _shorten(text, MAX_REPR)


def bounded_repr(value, files=None) -> str:
    """A short repr: strings ~60 chars, containers ~8 items, depth 2; never raises."""
    try:
        ctx = ReprContext(frozenset(files)) if files else _NO_FILES
        return _shorten(_repr(value, MAX_DEPTH, ctx), MAX_REPR)
    except Exception:  # a broken __len__/__iter__, a RecursionError: show the type only
        return f"<{type_name(value)} object>"



def safe_repr(value, ctx: ReprContext) -> str:
    """bounded_repr with a ready context (the tracer's hot path)."""
    try:
        return _shorten(_repr(value, MAX_DEPTH, ctx), MAX_REPR)
    except Exception:
        return f"<{type_name(value)} object>"


def exception_message(exc) -> str:
    """str(exc), bounded; a program's own exception class is not asked for its __str__."""
    try:
        if type(exc).__str__ is BaseException.__str__ or type(exc).__module__ == "builtins":
            text = str(exc)
        else:
            text = BaseException.__str__(exc)
    except Exception:
        return ""
    return _shorten(text, 200) if isinstance(text, str) else ""
