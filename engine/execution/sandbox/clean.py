"""What M does with T's result before anything reaches the host: strict checks of exact types,
sizes and depth, and a conversion to the JSON form engine/execution/verdict.py reads. Anything
malformed is the candidate's doing and becomes a "bad_result" report."""

from __future__ import annotations

import json

from .encode import MAX_DEPTH, MAX_INT_BITS, MAX_NODES, MAX_TEXT
from .pristine import exact_type as _type
from .pristine import length as _len
from .pristine import loads

MAX_TRACE_JSON = 8 << 20
MAX_PROJECT_JSON = 24 << 20


def clean_result(raw) -> dict:
    if _type(raw) is not dict:
        raise ValueError("not a dict")
    result = {"error": clean_error(raw.get("error")), "leaves": [], "block": None, "trace_json": None,
              "interrupted": raw.get("interrupted") is True}
    block = raw.get("block")
    result["block"] = "ok" if block == "ok" else clean_error(block)
    leaves = raw.get("leaves") or ()
    if _type(leaves) is not tuple or len(leaves) > 10_000:
        raise ValueError("bad leaves")
    budget = [MAX_NODES, MAX_TEXT]
    for blob in leaves:  # each leaf was marshalled by T as soon as it was encoded
        if _type(blob) is not bytes:
            raise ValueError("bad leaf")
        leaf = loads(blob)
        if _type(leaf) is not tuple or not leaf:
            raise ValueError("bad leaf")
        if leaf[0] == "value" and len(leaf) == 2:
            result["leaves"].append(["value", to_json_value(leaf[1], budget, 0)])
        elif leaf[0] == "raise" and len(leaf) == 2:
            result["leaves"].append(["raise", clean_error(leaf[1])])
        elif leaf[0] == "refused" and len(leaf) == 2 and _type(leaf[1]) is str:
            result["leaves"].append(["refused", leaf[1][:300]])
        else:
            raise ValueError("bad leaf")
    result["trace_json"] = trace_json(raw.get("trace"))
    summary = raw.get("project")  # a pytest run's summary: plain data, made JSON here (the host checks its shape)
    if summary is not None:
        if _type(summary) is not dict:
            raise ValueError("bad project summary")
        try:
            text = json.dumps(summary, allow_nan=False, default=_not_plain, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError, OverflowError):
            raise ValueError("bad project summary") from None
        if _len(text) > MAX_PROJECT_JSON:
            raise ValueError("bad project summary")
        result["project"] = text
    return result


def _not_plain(value):
    raise TypeError("not plain data")


def trace_json(trace) -> str | None:
    """The tracer's result as JSON text, or None if it is not plain data. The C encoder validates
    it (dict/list/str/int/float/bool/None only, finite floats, bounded ints and depth) quickly;
    the host rebuilds it with Trace.from_dict, which checks the shape."""
    if _type(trace) is not dict:
        return None
    try:
        text = json.dumps(trace, allow_nan=False, default=_not_plain, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError, OverflowError):
        return None
    return text if _len(text) <= MAX_TRACE_JSON else None


def clean_error(error):
    if error is None:
        return None
    if _type(error) is not tuple or len(error) != 4:
        raise ValueError("bad error")
    kind, message, file, line = error
    if not (_type(kind) is str and _type(message) is str and _type(file) is str and _type(line) is int):
        raise ValueError("bad error")
    return [kind[:100], message[:500], file[:20], line]


def to_json_value(value, budget, depth):
    """T's tagged tuples -> the JSON form verdict.decode() reads (strict: exact types only)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH or _type(value) is not tuple or not value:
        raise ValueError("bad value")
    tag = value[0]
    if tag == "n" and len(value) == 1:
        return ["n"]
    if len(value) == 2:
        item = value[1]
        kind = _type(item)
        if tag == "b" and kind is bool:
            return ["b", item]
        if tag == "i" and kind is int and item.bit_length() <= MAX_INT_BITS:
            return ["i", hex(item)]
        if tag == "f" and kind is float:
            return ["f", item.hex()]
        if tag in ("s", "y") and kind in (str, bytes) and (tag == "s") == (kind is str):
            budget[1] -= len(item)
            if budget[1] < 0:
                raise ValueError("too large")
            return ["s", item] if tag == "s" else ["y", item.hex()]
        if tag in ("l", "t", "S", "F") and kind is list:
            return [tag, [to_json_value(v, budget, depth + 1) for v in item]]
        if tag == "d" and kind is list:
            pairs = []
            for pair in item:
                if _type(pair) is not tuple or len(pair) != 2:
                    raise ValueError("bad pair")
                pairs.append([to_json_value(pair[0], budget, depth + 1), to_json_value(pair[1], budget, depth + 1)])
            return ["d", pairs]
    if tag == "c" and len(value) == 3 and _type(value[1]) is float and _type(value[2]) is float:
        return ["c", value[1].hex(), value[2].hex()]
    known = _stdlib_json(tag, value, budget, depth)
    if known is not None:
        return known
    raise ValueError("bad value")


def _small_int(item) -> bool:
    return _type(item) is int and item.bit_length() <= 256


def _text(item, limit: int = 4096) -> bool:
    return _type(item) is str and len(item) <= limit


def _stdlib_json(tag, value, budget, depth):
    """The standard-library value types of encode._stdlib_value (strict shapes), or None."""
    if tag == "D" and len(value) == 4 and value[1] in ("date", "datetime", "time", "timedelta") \
            and _type(value[2]) is tuple and len(value[2]) <= 8 and all(_small_int(f) for f in value[2]):
        zone = value[3]
        if zone is not None:
            if not (_type(zone) is tuple and len(zone) == 3 and _small_int(zone[0]) and _small_int(zone[1])
                    and (zone[2] is None or _text(zone[2], 200))):
                raise ValueError("bad time zone")
            zone = [zone[0], zone[1], zone[2]]
        return ["D", value[1], list(value[2]), zone]
    if tag == "Dc" and len(value) == 2 and _text(value[1], 10_000):
        return ["Dc", value[1]]
    if tag == "Fr" and len(value) == 3 and all(_type(v) is int and v.bit_length() <= MAX_INT_BITS for v in value[1:]):
        return ["Fr", hex(value[1]), hex(value[2])]
    if tag == "U" and len(value) == 2 and _type(value[1]) is int and 0 <= value[1] < (1 << 128):
        return ["U", hex(value[1])]
    if tag == "P" and len(value) == 3 and value[1] in ("posix", "windows") and _text(value[2], 1 << 16):
        return ["P", value[1], value[2]]
    if tag == "E" and len(value) == 5 and all(_text(v, 500) for v in value[1:4]):
        return ["E", value[1], value[2], value[3], to_json_value(value[4], budget, depth + 1)]
    return None
