"""Change detection for the tracer: which variables a line rebound or mutated in place.

Rebinding is seen by identity. For mutable values a fingerprint stands in for the contents: the ids
of the items a bounded repr would show (one level into nested containers, so a grid's cells count),
cheap enough to compute on every line, and different whenever the shown items are other objects.
Standard library only (this runs inside the sandbox).
"""

from __future__ import annotations

import itertools

from .reprs import MAX_ITEMS, MAX_STRING

__all__ = ["IMMUTABLE_TYPES", "fingerprint"]

# Values whose identity is their content (a rebinding is the only way they change).
IMMUTABLE_TYPES = frozenset({int, float, bool, str, bytes, complex, type(None), tuple, frozenset, range, slice,
                             type(...)})
_CONTAINERS = frozenset({list, dict, set})


def _inner_fingerprint(value):
    """One level down: a nested container's length and item ids, anything else its id."""
    cls = type(value)
    if cls is list:
        return (len(value), tuple(map(id, value if len(value) <= MAX_ITEMS else value[:6] + value[-2:])))
    if cls is dict:
        return (len(value), tuple(map(id, itertools.islice(value.values(), MAX_ITEMS))))
    if cls is set:
        return (len(value), tuple(map(id, itertools.islice(value, MAX_ITEMS))))
    return id(value)


def _list_fingerprint(value):
    size = len(value)
    items = value if size <= MAX_ITEMS else value[: MAX_ITEMS - 2] + value[-2:]
    if size and (type(items[0]) in _CONTAINERS or type(items[-1]) in _CONTAINERS):  # a grid
        return (size, tuple(map(_inner_fingerprint, items)))
    return (size, tuple(map(id, items)))


def _dict_fingerprint(value):
    values = list(itertools.islice(value.values(), MAX_ITEMS))
    if values and (type(values[0]) in _CONTAINERS or type(values[-1]) in _CONTAINERS):
        shown = tuple(map(_inner_fingerprint, values))
    else:
        shown = tuple(map(id, values))
    return (len(value), shown, tuple(map(id, itertools.islice(value, MAX_ITEMS))))


def _set_fingerprint(value):
    return (len(value), tuple(map(id, itertools.islice(value, MAX_ITEMS))))


def _deque_fingerprint(value):
    size = len(value)
    return (size, tuple(map(id, itertools.islice(value, MAX_ITEMS - 2))), id(value[-1]) if size else 0)


def _bytearray_fingerprint(value):
    return (len(value), bytes(value[:MAX_STRING]), bytes(value[-16:]))


def _attributes_fingerprint(value):
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:
        return None
    if type(attributes) is not dict:
        return None
    return (len(attributes), tuple(map(_inner_fingerprint, itertools.islice(attributes.values(), MAX_ITEMS))))


_FINGERPRINTS: dict[type, object] = {list: _list_fingerprint, dict: _dict_fingerprint, set: _set_fingerprint,
                                     bytearray: _bytearray_fingerprint}


def _fingerprint_for(cls):
    """The fingerprint function for a mutable type, or None when identity must do."""
    strategy = _FINGERPRINTS.get(cls, False)
    if strategy is False:
        strategy = None
        try:
            if issubclass(cls, list):
                strategy = _list_fingerprint
            elif issubclass(cls, dict):
                strategy = _dict_fingerprint
            elif issubclass(cls, (set,)):
                strategy = _set_fingerprint
            elif cls.__name__ == "deque":
                strategy = _deque_fingerprint
            elif getattr(cls, "__dictoffset__", 0):  # instances with attributes
                strategy = _attributes_fingerprint
        except Exception:
            strategy = None
        _FINGERPRINTS[cls] = strategy
    return strategy


def fingerprint(value):
    """Something that changes when the shown contents of a mutable value change (ids of the items a
    repr would show, one level into nested containers). None: identity is enough for this value."""
    strategy = _FINGERPRINTS.get(type(value), False)
    if strategy is False:
        strategy = _fingerprint_for(type(value))
    return strategy(value) if strategy is not None else None

