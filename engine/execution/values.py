"""Standard-library values rebuilt on the host from their plain encoding (see
engine/execution/sandbox/encode.py, _stdlib_value): dates and times (fixed-offset zones), Decimal,
Fraction, UUID, pure paths, and enum members.

An enum's class lives in the candidate's module, which the host never imports: a member comes back
as an `EnumMember` token, interned per (module, class, member), so `is` and `==` between members
behave as they do in Python (identity) and a member never equals a plain value."""

from __future__ import annotations

import datetime
import decimal
import fractions
import pathlib
import threading
import uuid
from dataclasses import dataclass

TAGS = frozenset({"D", "Dc", "Fr", "U", "P", "E"})
MAX_DECIMAL_DIGITS = 10_000
_INTERNED: dict = {}
_INTERNED_LOCK = threading.Lock()
_MAX_INTERNED = 100_000


@dataclass(frozen=True, eq=False)
class EnumMember:
    """An enum member of the candidate's module: equal only to itself (interned by identity)."""

    module: str
    qualname: str
    name: str
    value: object

    def __repr__(self) -> str:
        return f"<{self.qualname}.{self.name}: {self.value!r}>"


def enum_member(module: str, qualname: str, name: str, value) -> EnumMember:
    key = (module, qualname, name)
    with _INTERNED_LOCK:
        found = _INTERNED.get(key)
        if found is None:
            if len(_INTERNED) >= _MAX_INTERNED:
                _INTERNED.clear()
            found = _INTERNED[key] = EnumMember(module, qualname, name, value)
        return found


def _zone(zone) -> datetime.tzinfo | None:
    if zone is None:
        return None
    seconds, microseconds, name = zone
    offset = datetime.timedelta(seconds=seconds, microseconds=microseconds)
    return datetime.timezone(offset, name) if name is not None else datetime.timezone(offset)


def decode_stdlib(tag: str, rest: list, *inner):
    """One tagged value (JSON lists, already checked for shape by the sandbox's M) -> a host value.
    Raises ValueError/TypeError/ArithmeticError on anything malformed."""
    if tag == "D":
        kind, fields, zone = rest
        if not all(isinstance(f, int) and not isinstance(f, bool) for f in fields):
            raise ValueError("bad time fields")
        if kind == "date" and len(fields) == 3:
            return datetime.date(*fields)
        if kind == "datetime" and len(fields) == 8:
            *parts, fold = fields
            return datetime.datetime(*parts, tzinfo=_zone(zone), fold=fold)
        if kind == "time" and len(fields) == 5:
            *parts, fold = fields
            return datetime.time(*parts, tzinfo=_zone(zone), fold=fold)
        if kind == "timedelta" and len(fields) == 3:
            return datetime.timedelta(days=fields[0], seconds=fields[1], microseconds=fields[2])
        raise ValueError("bad time value")
    if tag == "Dc":
        (text,) = rest
        if not isinstance(text, str) or len(text) > MAX_DECIMAL_DIGITS:
            raise ValueError("bad Decimal")
        return decimal.Decimal(text)  # exact: construction from a string ignores the context's precision
    if tag == "Fr":
        numerator, denominator = (int(part, 16) for part in rest)
        return fractions.Fraction(numerator, denominator)
    if tag == "U":
        (number,) = rest
        return uuid.UUID(int=int(number, 16))
    if tag == "P":
        flavour, text = rest
        return (pathlib.PurePosixPath if flavour == "posix" else pathlib.PureWindowsPath)(text)
    if tag == "E" and len(rest) == 4 and inner:
        module, qualname, name = rest[:3]
        if not all(isinstance(part, str) for part in (module, qualname, name)):
            raise ValueError("bad enum member")
        return enum_member(module, qualname, name, inner[0])
    raise ValueError("malformed value")
