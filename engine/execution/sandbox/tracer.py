"""The tracer that runs inside the sandbox: what a candidate program did while one test ran.

Stdlib only and cheap to import: the sandbox worker imports it before any candidate code runs.
Python 3.12+ uses ``sys.monitoring`` (callbacks only for the traced code objects); 3.11 uses
``sys.settrace``. Both feed the same recorder and give the same events (tests/unit/test_tracer.py
checks that on the 3.12/3.13 interpreters when they exist). ``Tracer.result()`` is the
``Trace.to_dict()`` shape of ``engine/execution/trace.py`` as plain lists/dicts/strings (marshal/JSON-able).

Events: ``call`` (values = arguments), ``line`` (values = variables the line rebound or mutated,
after it ran), ``return`` (one value named "return"; a generator's yield is a return event whose
value is named "yield"), ``exception`` (where it was raised; not repeated in the frames it passes
through; a frame left by an exception has no return event), ``skip`` (count = executions of that
line left out by loop compression). Lambdas and comprehensions are part of their line (3.12
inlines comprehensions, so they have no frames to show there anyway).

Why the recorder looks the way it does (the cost budget is ~3x untraced for whole runs):
- only frames whose code file is in ``files`` are traced; other frames get no line callbacks;
- a line's variables are diffed against the previous snapshot by identity, plus a fingerprint of
  container contents (ids of the items a repr would show) for mutable values; a line past its
  first iterations only re-checks the names it mutated in place during them;
- loop compression: for each line, the first ``head_iterations`` executions are recorded; later
  ones go to a "tail run" that keeps only the latest iteration (cut where a loop's head line
  repeats) and whose reprs are computed only if it survives; skip events count the rest;
- past ``max_events`` nothing more is recorded (line callbacks are switched off) except the final
  exception and the final returns at depth 0 and 1;
- past ``max_seconds`` of traced running the tracer detaches completely (truncated): with a trace
  function installed, CPython 3.11 runs every frame in its slower tracing mode, which costs 2-3x on
  heavy loops even where no callback fires; the verdict does not depend on the trace;
- bounded reprs never call ``__repr__`` of classes defined in the traced program.

Robustness: errors inside the tracer are swallowed (never raised into the traced code); other
threads are not traced; if the traced code removes or replaces the trace function, the trace so far
is still returned. Only ``Exception``s are swallowed, so a ``BaseException`` raised by a signal
handler (a soft timeout) still interrupts the traced code. Known limit: a runaway recursion that
hits the recursion limit inside a tracer callback ends tracing there (no RecursionError event).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

__all__ = ["Tracer", "bounded_repr", "type_name"]

# Code objects that are not traced as frames of their own: their line is the enclosing line, and
# 3.12 inlines comprehensions anyway, so skipping them keeps both interpreters' traces alike.
# Past this much wall time the tracer detaches (see the module docstring); bench validate adds it
# to its per-test limit when tracing.
MAX_SECONDS = 1.0
_SKIPPED_CODE_NAMES = frozenset({"<lambda>", "<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_VARARGS, _VARKEYWORDS = 0x04, 0x08
_MAX_RUN = 64  # events kept in a tail run at most (recursion can make runs long)

# ---------------------------------------------------------------------------------------------
# Bounded reprs
# ---------------------------------------------------------------------------------------------

MAX_STRING = 60
MAX_ITEMS = 8
MAX_DEPTH = 2
MAX_REPR = 160  # any single repr, after everything else

_NoneType = type(None)
# Values whose identity is their content (a rebinding is the only way they change).
_IMMUTABLE = frozenset({int, float, bool, str, bytes, complex, _NoneType, tuple, frozenset, range, slice, type(...)})
_HIDDEN = frozenset({FunctionType, BuiltinFunctionType, ModuleType, type, MethodType})


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


class _ReprContext:
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


_NO_FILES = _ReprContext(frozenset())


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
    if cls in _HIDDEN:
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
        ctx = _ReprContext(frozenset(files)) if files else _NO_FILES
        return _shorten(_repr(value, MAX_DEPTH, ctx), MAX_REPR)
    except Exception:  # a broken __len__/__iter__, a RecursionError: show the type only
        return f"<{type_name(value)} object>"


# ---------------------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------------------

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


def _fingerprint(value):
    """Something that changes when the shown contents of a mutable value change (ids of the items a
    repr would show, one level into nested containers). None: identity is enough for this value."""
    strategy = _FINGERPRINTS.get(type(value), False)
    if strategy is False:
        strategy = _fingerprint_for(type(value))
    return strategy(value) if strategy is not None else None


# ---------------------------------------------------------------------------------------------
# The recorder
# ---------------------------------------------------------------------------------------------

# Event records are lists, for speed: [kind, file, line, func, depth, values, exc_type, message, count,
# lazy, code info]. values: list of [name, repr, type]; while lazy is True (from creation until the
# event is recorded) it is a list of (name, object) whose reprs are computed only if the event survives
# loop compression.
_KIND, _FILE, _LINE, _FUNC, _DEPTH, _VALUES, _EXC, _MSG, _COUNT, _LAZY, _INFO = range(11)
_CALL_KEY, _RETURN_KEY, _YIELD_KEY = -1, -2, -3
_MISSING = object()


class _CodeInfo:
    """Per traced code object: executions of each line (and of call/return keys), where the latest
    one sits in the tail run, and how many were left out of the current run."""

    __slots__ = ("code", "counts", "last", "accounted", "in_run", "depth", "mutators")

    def __init__(self, code):
        self.code = code
        self.accounted: dict[int, int] = {}  # line -> executions already recorded or skipped
        self.in_run = False  # has events in the current tail run
        self.depth = 0  # depth of its latest frame (for skip events)
        self.mutators: dict[int, set] = {}  # line -> names it mutated in place (in its first runs)
        self.counts: dict[int, int] = {}
        self.last: dict[int, int] = {}  # loop-head line -> absolute position in the run stream


class _FrameState:
    """What the recorder keeps for one traced frame."""

    __slots__ = ("info", "file", "func", "depth", "seen", "fingerprints", "pending", "is_generator", "mutated",
                 "last_line")

    def __init__(self, info: _CodeInfo, file, depth):
        self.info = info
        self.file = file
        self.func = info.code.co_name
        self.depth = depth
        self.seen: dict = {}  # name -> object after the last event
        self.fingerprints: dict = {}  # name -> fingerprint, for the mutable ones
        self.pending = None  # the line event whose "values after" are not known yet
        self.is_generator = bool(info.code.co_flags & _GENERATOR_FLAGS)
        self.mutated = False
        self.last_line = 0  # the frame's previous line event (a smaller or equal line = a jump back)


class Tracer:
    """Records calls, lines (with the variables each line changed), returns and exceptions of the
    frames whose code file is in ``files``; see the module docstring. Use as a context manager on
    the thread that runs the test, then call ``result()``."""

    def __init__(self, files: dict[str, str], *, max_events: int = 2000, head_iterations: int = 3,
                 max_seconds: float = MAX_SECONDS):
        self.files = dict(files)
        self.max_seconds = max_seconds
        self._deadline = float("inf")
        self._ticks = 0
        self.max_events = max(1, int(max_events))
        self.head = max(1, int(head_iterations))
        self._ctx = _ReprContext(frozenset(self.files))
        self._events: list[list] = []
        # The tail run: events past their line's first iterations, not yet recorded. Positions are
        # absolute (they only grow), so a stale position in _CodeInfo.last is simply < _run_start.
        self._run: list[list] = []
        self._run_offset = 0  # absolute position of _run[0]
        self._run_start = 0  # absolute position of the first live event of the run
        self._run_infos: list[_CodeInfo] = []  # code infos with events in the run
        self._finals: list[list] = []  # after the cap: the final returns / exception
        self._states: dict = {}  # frame -> _FrameState, for frames that have not returned
        self._infos: dict[int, _CodeInfo] = {}  # id(code) -> info (the info keeps the code alive)
        self._propagating = None  # the exception object last recorded (not re-recorded per frame)
        self._total = 0
        self._truncated = False
        self._errors = 0
        self._thread = None
        self._active = False
        self._backend = None
        self._previous_trace = None
        self._finished = None

    # -- public ---------------------------------------------------------------------------------
    def __enter__(self) -> "Tracer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> bool:
        self.stop()
        return False

    def start(self) -> None:
        self._thread = threading.get_ident()
        self._active = True
        self._deadline = time.perf_counter() + self.max_seconds
        if hasattr(sys, "monitoring"):
            backend = _MonitoringBackend(self)
            if backend.start():
                self._backend = backend
                return
        self._backend = _SettraceBackend(self)
        self._backend.start()

    def stop(self) -> None:
        if not self._active:
            return
        self._active = False
        try:
            if self._backend is not None:
                self._backend.stop()
        except Exception:
            self._errors += 1

    def result(self) -> dict:
        """The trace as ``Trace.to_dict()`` data. Safe to call at any time, also while tracing
        (it stops tracing first) and after the traced code removed the tracer."""
        if self._finished is None:
            self.stop()
            try:
                self._finished = self._finish()
            except Exception:
                self._finished = {"events": [], "truncated": True, "total_events": self._total}
        return self._finished

    # -- values ---------------------------------------------------------------------------------
    def _depth_of(self, frame) -> int:
        states = self._states
        parent = frame.f_back
        while parent is not None:
            state = states.get(parent)
            if state is not None:
                return state.depth + 1
            parent = parent.f_back
        return 0

    def _values(self, pairs) -> list:
        ctx = self._ctx
        return [[name, _safe_repr(value, ctx), type_name(value)] for name, value in pairs]

    def _diff(self, state: _FrameState, frame, watch=None):
        """(name, object) pairs of the variables rebound or mutated since the last snapshot, or None.
        Identity first; fingerprints only for mutable values, and only for the names in ``watch``
        when it is given (a line past its first iterations: the names it mutated then)."""
        seen = state.seen
        fingerprints = state.fingerprints
        get = seen.get
        changed = None
        for name, value in frame.f_locals.items():
            if get(name, _MISSING) is value:
                continue
            seen[name] = value
            cls = type(value)
            if cls in _HIDDEN or name[:2] == "__":  # functions, modules, classes, dunders
                continue
            if cls in _IMMUTABLE:
                if name in fingerprints:
                    del fingerprints[name]
            else:
                fingerprints[name] = _fingerprint(value)
            if changed is None:
                changed = [(name, value)]
            else:
                changed.append((name, value))
        if fingerprints and (watch is None or watch):
            for name in list(fingerprints) if watch is None else watch:
                old = fingerprints.get(name)
                if old is None:
                    continue
                value = seen[name]
                new = _fingerprint(value)
                if new != old:
                    fingerprints[name] = new
                    if changed is None:
                        changed = [(name, value)]
                    elif all(name != n for n, _ in changed):
                        changed.append((name, value))
                    if watch is None:
                        state.mutated = True
        return changed

    def _settle(self, state: _FrameState, frame) -> None:
        """The frame's previous line has finished: attach the variables it changed. In-place
        mutations are looked for everywhere during a line's first iterations; later, only in the
        names that line mutated then (a fingerprint per mutable local per line is the costly part)."""
        event = state.pending
        state.pending = None
        if len(event) > _INFO:  # in the tail run
            watch = state.info.mutators.get(event[_LINE], ())
            changed = self._diff(state, frame, watch)
        else:
            state.mutated = False
            changed = self._diff(state, frame)
            if state.mutated:
                names = state.info.mutators.setdefault(event[_LINE], set())
                names.update(name for name, value in changed if type(value) not in _IMMUTABLE)
        if changed:
            event[_VALUES] = changed if event[_LAZY] else self._values(changed)

    # -- recording ------------------------------------------------------------------------------
    def _admit(self, info: _CodeInfo, key: int, event: list) -> None:
        """Record a call/return/exception event, applying loop compression and the event cap (line
        events take the same path, inlined in on_line)."""
        counts = info.counts
        seen = counts.get(key, 0) + 1
        counts[key] = seen
        if seen <= self.head:
            if self._run:
                self._flush_run()
            self._append(event)
            return
        run = self._run
        position = self._run_offset + len(run)
        if position - self._run_start >= _MAX_RUN:
            self._drop_until(position - _MAX_RUN + 1)
        if not info.in_run:
            info.in_run = True
            self._run_infos.append(info)
        event.append(info)
        run.append(event)

    def _drop_until(self, position: int) -> None:
        """Events before ``position`` leave the run (they are counted at the flush, from the
        execution counts)."""
        self._run_start = position
        if position - self._run_offset > 4 * _MAX_RUN:  # forget dead events now and then
            del self._run[: position - self._run_offset]
            self._run_offset = position

    def _flush_run(self) -> None:
        """The run ends (an event within its first iterations comes): record skip events for the
        executions left out, then the run's live events (the latest iteration)."""
        live = self._run[self._run_start - self._run_offset :]
        end = self._run_offset + len(self._run)
        self._run = []
        self._run_offset = self._run_start = end
        kept: dict = {}
        for event in live:
            if event[_KIND] == "line":
                key = (id(event[_INFO]), event[_LINE])
                kept[key] = kept.get(key, 0) + 1
        skips = []
        head = self.head
        for info in self._run_infos:
            info.in_run = False
            accounted = info.accounted
            name = info.code.co_name
            file = self.files.get(info.code.co_filename, "program")
            for line, count in info.counts.items():
                if line < 0 or count <= head:
                    continue
                before = accounted.get(line, head)
                if count == before:
                    continue
                accounted[line] = count
                left_out = count - before - kept.get((id(info), line), 0)
                if left_out > 0:
                    skips.append(["skip", file, line, name, info.depth, None, "", "", left_out, False])
        self._run_infos = []
        skips.sort(key=lambda e: (e[_DEPTH], e[_FILE] != "program", e[_LINE]))
        for event in skips:
            self._append(event)
        for event in live:  # past the cap, _append still keeps a final return/exception
            del event[_INFO:]
            self._append(event)

    def _append(self, event: list) -> None:
        if len(self._events) >= self.max_events:
            self._truncate()
            if event[_KIND] == "exception" or (event[_KIND] == "return" and event[_DEPTH] <= 1):
                self._keep_final(event)
            return
        if event[_LAZY]:
            event[_LAZY] = False
            if event[_VALUES]:
                event[_VALUES] = self._values(event[_VALUES])
        self._events.append(event)

    def _truncate(self) -> None:
        if self._truncated:
            return
        self._truncated = True
        self._run = []
        for info in self._run_infos:
            info.in_run = False
        self._run_infos = []
        if self._backend is not None:
            self._backend.stop_lines()

    def _keep_final(self, event: list) -> None:
        """After the cap: the last exception and the last return at depth 0 and 1 survive."""
        kind, depth = event[_KIND], event[_DEPTH]
        self._finals = [e for e in self._finals if not (e[_KIND] == kind and (kind == "exception" or e[_DEPTH] == depth))]
        if event[_LAZY] and event[_VALUES]:
            event[_VALUES] = self._values(event[_VALUES])
        event[_LAZY] = False
        del event[_INFO:]
        self._finals.append(event)

    # -- event handlers (called by the backends; never raise into traced code) -------------------
    def on_call(self, frame, code, file):
        """A traced frame starts (or a generator resumes). Returns its state."""
        states = self._states
        state = states.get(frame)
        depth = self._depth_of(frame)
        if state is not None:  # a generator resuming
            state.depth = state.info.depth = depth
            return state
        info = self._infos.get(id(code))
        if info is None:
            info = self._infos[id(code)] = _CodeInfo(code)
        info.depth = depth
        state = _FrameState(info, file, depth)
        states[frame] = state
        arguments = []
        local_values = frame.f_locals
        if code.co_name != "<module>":
            count = code.co_argcount + code.co_kwonlyargcount
            count += bool(code.co_flags & _VARARGS) + bool(code.co_flags & _VARKEYWORDS)
            for name in code.co_varnames[:count]:
                if name in local_values:
                    arguments.append((name, local_values[name]))
        self._diff(state, frame)  # the starting snapshot: arguments, or the module's globals
        self._total += 1
        if not self._truncated:
            line = frame.f_lineno or code.co_firstlineno
            self._admit(info, _CALL_KEY, ["call", file, line, state.func, depth, arguments, "", "", 0, True])
        return state

    def on_line(self, state: _FrameState, frame, line: int) -> None:
        if state.pending is not None:
            self._settle(state, frame)
        self._propagating = None
        self._total += 1
        if self._truncated:
            return
        event = ["line", state.file, line, state.func, state.depth, None, "", "", 0, True]
        state.pending = event
        # _admit, inlined for the hot path (a loop's later iterations)
        info = state.info
        counts = info.counts
        seen = counts.get(line, 0) + 1
        counts[line] = seen
        if seen <= self.head:
            if self._run:
                self._flush_run()
            self._append(event)
            state.last_line = line
            return
        # Past the first iterations: the run keeps the latest iteration. A line reached by jumping
        # back (a loop's head) starts a new one: the run is cut at that line's previous occurrence.
        run = self._run
        position = self._run_offset + len(run)
        if line <= state.last_line:
            previous = info.last.get(line)
            if previous is not None and previous > self._run_start:
                self._drop_until(previous)
            info.last[line] = position
        if position - self._run_start >= _MAX_RUN:
            self._drop_until(position - _MAX_RUN + 1)
        state.last_line = line
        if not info.in_run:
            info.in_run = True
            self._run_infos.append(info)
        event.append(info)
        run.append(event)

    def on_return(self, frame, value, is_yield: bool = False) -> None:
        state = self._states.get(frame)
        if state is None:
            return
        if state.pending is not None:
            self._settle(state, frame)
        if not is_yield:
            del self._states[frame]
        self._total += 1
        name = "yield" if is_yield else "return"
        event = ["return", state.file, frame.f_lineno, state.func, state.depth, [(name, value)], "", "", 0, True]
        if self._truncated:
            if state.depth <= 1 and not is_yield:
                self._keep_final(event)
            return
        self._admit(state.info, _YIELD_KEY if is_yield else _RETURN_KEY, event)

    def on_unwind(self, frame) -> None:
        state = self._states.pop(frame, None)
        if state is not None and state.pending is not None:
            self._settle(state, frame)

    def on_exception(self, frame, exc) -> None:
        state = self._states.get(frame)
        if state is None:
            return
        if exc is self._propagating:  # the same exception passing through a caller
            return
        # Record first, then remember it as propagating: if recording fails (a RecursionError
        # near the recursion limit), the caller's frame records it instead.
        line = frame.f_lineno
        event = ["exception", state.file, line, state.func, state.depth, None,
                 type_name(exc), _exception_message(exc), 0, True]
        self._total += 1
        if self._truncated:
            self._keep_final(event)
        else:
            self._admit(state.info, -10 - line, event)
        self._propagating = exc
        if state.pending is not None:
            self._settle(state, frame)

    def over_time(self) -> bool:
        """Checked every 256 callbacks: past the time budget, stop tracing for good."""
        self._ticks += 1
        if self._ticks & 255 or time.perf_counter() < self._deadline:
            return False
        self._truncate()
        self.stop()
        return True

    def internal_error(self) -> None:
        """Something in the tracer failed: count it; give up tracing after a few."""
        self._errors += 1
        if self._errors > 20:
            self._truncated = True
            self.stop()

    # -- finishing ------------------------------------------------------------------------------
    def _finish(self) -> dict:
        for state in self._states.values():
            # Frames still running when tracing ended (the traced code removed the tracer, or a
            # timeout): their locals have moved on, so the pending line keeps no values.
            state.pending = None
        if not self._truncated and self._run:
            self._flush_run()
        events = self._events + self._finals
        out = []
        for event in events:
            if event[_LAZY]:  # values settled after the event was recorded
                event[_LAZY] = False
                if event[_VALUES]:
                    event[_VALUES] = self._values(event[_VALUES])
            record = {"kind": event[_KIND], "file": event[_FILE], "line": event[_LINE], "func": event[_FUNC],
                      "depth": event[_DEPTH]}
            if event[_VALUES]:
                record["values"] = [list(v) for v in event[_VALUES]]
            if event[_EXC]:
                record["exc_type"] = event[_EXC]
            if event[_MSG]:
                record["message"] = event[_MSG]
            if event[_COUNT]:
                record["count"] = event[_COUNT]
            out.append(record)
        return {"events": out, "truncated": self._truncated, "total_events": max(self._total, len(out))}


def _safe_repr(value, ctx) -> str:
    try:
        return _shorten(_repr(value, MAX_DEPTH, ctx), MAX_REPR)
    except Exception:
        return f"<{type_name(value)} object>"


def _exception_message(exc) -> str:
    try:
        if type(exc).__str__ is BaseException.__str__ or type(exc).__module__ == "builtins":
            text = str(exc)
        else:
            text = BaseException.__str__(exc)
    except Exception:
        return ""
    return _shorten(text, 200) if isinstance(text, str) else ""


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------

try:
    import opcode as _opcode

    _YIELD_VALUE = _opcode.opmap.get("YIELD_VALUE", -1)
    _RETURN_OPS = frozenset(_opcode.opmap[name] for name in ("RETURN_VALUE", "RETURN_CONST") if name in _opcode.opmap)
except Exception:  # pragma: no cover
    _YIELD_VALUE, _RETURN_OPS = -1, frozenset()


class _SettraceBackend:
    """sys.settrace: a global function that picks frames, and a per-frame local function."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer
        self.files = tracer.files
        self.lines = True

    def start(self) -> None:
        self.tracer._previous_trace = sys.gettrace()
        sys.settrace(self.global_trace)

    def stop(self) -> None:
        # Also when the traced code replaced or removed the tracer: put back what was there before.
        sys.settrace(self.tracer._previous_trace)

    def stop_lines(self) -> None:
        """Past the event cap: only returns and exceptions still matter."""
        self.lines = False
        for frame in list(self.tracer._states):
            try:
                frame.f_trace_lines = False
            except Exception:
                pass

    def global_trace(self, frame, event, arg):
        try:
            if self.tracer.over_time():
                return None
            code = frame.f_code
            file = self.files.get(code.co_filename)
            if file is None or code.co_name in _SKIPPED_CODE_NAMES or not self.tracer._active:
                return None
            state = self.tracer.on_call(frame, code, file)
            if not self.lines:
                frame.f_trace_lines = False
            return self._local_for(state)
        except Exception:
            self.tracer.internal_error()
            return None

    def _local_for(self, state: _FrameState):
        tracer = self.tracer

        def local_trace(frame, event, arg):
            try:
                if tracer.over_time():
                    return None
                if event == "line":
                    tracer.on_line(state, frame, frame.f_lineno)
                elif event == "return":
                    # settrace says "return" also when the frame is left by an exception; the
                    # instruction it stopped at tells which it was.
                    opcode = frame.f_code.co_code[frame.f_lasti]
                    if opcode in _RETURN_OPS:
                        tracer.on_return(frame, arg, False)
                    elif opcode == _YIELD_VALUE:
                        tracer.on_return(frame, arg, True)
                    else:
                        tracer.on_unwind(frame)
                elif event == "exception":
                    tracer.on_exception(frame, arg[1])
            except Exception:
                tracer.internal_error()
            return local_trace

        return local_trace


if hasattr(sys, "monitoring"):
    # Needed to find same-line loops; imported here, once per sandbox worker, rather than in every
    # forked test process.
    import dis


class _MonitoringBackend:
    """sys.monitoring (3.12+): PY_START finds the traced code objects (other code is DISABLEd at
    once), which then get local LINE/RETURN/YIELD events; RAISE and PY_UNWIND are global."""

    def __init__(self, tracer: Tracer):
        self.tracer = tracer
        self.files = tracer.files
        self.tool = None
        self.codes: dict[int, object] = {}
        self.loops: dict[int, dict] = {}  # id(code) -> same-line loop jumps
        self.lines = True

    def start(self) -> bool:
        monitoring = sys.monitoring
        for tool in (monitoring.DEBUGGER_ID, 3, 4, monitoring.PROFILER_ID, monitoring.OPTIMIZER_ID):
            try:
                monitoring.use_tool_id(tool, "egcfg-tracer")
            except ValueError:
                continue
            self.tool = tool
            break
        else:
            return False
        events = monitoring.events
        register = monitoring.register_callback
        register(self.tool, events.PY_START, self.on_start)
        register(self.tool, events.PY_RESUME, self.on_resume)
        register(self.tool, events.LINE, self.on_line)
        register(self.tool, events.PY_RETURN, self.on_return)
        register(self.tool, events.PY_YIELD, self.on_yield)
        register(self.tool, events.RAISE, self.on_raise)
        register(self.tool, events.PY_UNWIND, self.on_unwind)
        register(self.tool, events.JUMP, self.on_jump)
        monitoring.set_events(self.tool, events.PY_START | events.RAISE | events.PY_UNWIND)
        return True

    def stop(self) -> None:
        monitoring = sys.monitoring
        if self.tool is None:
            return
        tool, self.tool = self.tool, None
        try:
            monitoring.set_events(tool, 0)
            for code in self.codes.values():
                monitoring.set_local_events(tool, code, 0)
            for event in ("PY_START", "PY_RESUME", "LINE", "PY_RETURN", "PY_YIELD", "RAISE", "PY_UNWIND", "JUMP"):
                monitoring.register_callback(tool, getattr(monitoring.events, event), None)
        finally:
            monitoring.free_tool_id(tool)
            monitoring.restart_events()  # re-enable what DISABLE switched off, for later tracers

    def stop_lines(self) -> None:
        self.lines = False

    def _traced(self, code) -> str | None:
        file = self.files.get(code.co_filename)
        if file is None or code.co_name in _SKIPPED_CODE_NAMES:
            return None
        return file

    def on_start(self, code, offset):
        try:
            file = self._traced(code)
            if file is None:
                return sys.monitoring.DISABLE
            if self.tracer._thread != threading.get_ident() or self.tool is None:
                return None
            if id(code) not in self.codes:
                self.codes[id(code)] = code
                events = sys.monitoring.events
                sys.monitoring.set_local_events(
                    self.tool, code, events.LINE | events.PY_RETURN | events.PY_YIELD | events.PY_RESUME | events.JUMP
                )
            self.tracer.on_call(sys._getframe(1), code, file)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_resume(self, code, offset):
        try:
            if self.tracer._thread == threading.get_ident() and code.co_flags & _GENERATOR_FLAGS:
                self.tracer.on_call(sys._getframe(1), code, self.files.get(code.co_filename))
        except Exception:
            self.tracer.internal_error()
        return None

    def on_line(self, code, line):
        if not self.lines:
            return sys.monitoring.DISABLE
        try:
            if self.tracer.over_time():
                return None
            if self.tracer._thread == threading.get_ident():
                frame = sys._getframe(1)
                state = self.tracer._states.get(frame)
                if state is not None:
                    self.tracer.on_line(state, frame, line)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_jump(self, code, source, destination):
        """LINE does not fire when a loop jumps back within one line (`for x in xs: total += x`);
        settrace does, and the model must see every iteration: emit the line from here."""
        try:
            if destination >= source or not self.lines:
                return sys.monitoring.DISABLE
            line = self._same_line_loops(code).get(source)
            if line is None:
                return sys.monitoring.DISABLE
            if self.tracer._thread == threading.get_ident():
                frame = sys._getframe(1)
                state = self.tracer._states.get(frame)
                if state is not None:
                    self.tracer.on_line(state, frame, line)
        except Exception:
            self.tracer.internal_error()
        return None

    def _same_line_loops(self, code) -> dict:
        """Backward jumps of statement loops that stay on one line: jump offset -> line. Loops of
        inlined comprehensions (3.12+: FOR_ITER right after SWAP) are part of their line."""
        loops = self.loops.get(id(code))
        if loops is None:
            instructions = list(dis.get_instructions(code))
            lines, line = {}, None
            for instruction in instructions:
                line = instruction.positions.lineno if instruction.positions and instruction.positions.lineno else line
                lines[instruction.offset] = line
            previous = {b.offset: a for a, b in zip(instructions, instructions[1:])}
            backward = [(i.offset, i.argval) for i in instructions
                        if i.opname == "JUMP_BACKWARD" and isinstance(i.argval, int) and i.argval < i.offset]
            by_offset = {i.offset: i for i in instructions}
            comprehensions = [(target, source) for source, target in backward
                              if getattr(by_offset.get(target), "opname", "") == "FOR_ITER"
                              and getattr(previous.get(target), "opname", "") == "SWAP"]
            loops = {}
            for source, target in backward:
                if lines.get(source) != lines.get(target) or lines.get(source) is None:
                    continue
                if any(start <= source <= end for start, end in comprehensions):
                    continue
                loops[source] = lines[source]
            self.loops[id(code)] = loops
        return loops

    def on_return(self, code, offset, value):
        try:
            if self.tracer._thread == threading.get_ident():
                self.tracer.on_return(sys._getframe(1), value, False)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_yield(self, code, offset, value):
        try:
            if self.tracer._thread == threading.get_ident():
                self.tracer.on_return(sys._getframe(1), value, True)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_raise(self, code, offset, exc):
        try:
            if id(code) in self.codes and self.tracer._thread == threading.get_ident():
                self.tracer.on_exception(sys._getframe(1), exc)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_unwind(self, code, offset, exc):
        try:
            if id(code) in self.codes and self.tracer._thread == threading.get_ident():
                self.tracer.on_unwind(sys._getframe(1))
        except Exception:
            self.tracer.internal_error()
        return None


# ---------------------------------------------------------------------------------------------
# Benchmark: python -m engine.execution.sandbox.tracer --bench [--data DIR] [--tasks N]
# ---------------------------------------------------------------------------------------------

_BENCH_PROGRAMS = [
    (
        "def min_cost(cost, m, n):\n    tc = [[0] * 3 for _ in range(3)]\n    tc[0][0] = cost[0][0]\n"
        "    for i in range(1, m + 1):\n        tc[i][0] = tc[i - 1][0] + cost[i][0]\n"
        "    for j in range(1, n + 1):\n        tc[0][j] = tc[0][j - 1] + cost[0][j]\n"
        "    for i in range(1, m + 1):\n        for j in range(1, n + 1):\n"
        "            tc[i][j] = min(tc[i - 1][j - 1], tc[i - 1][j], tc[i][j - 1]) + cost[i][j]\n"
        "    return tc[m][n]\n",
        ["assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"],
    ),
    (
        "def is_not_prime(n):\n    result = False\n    for i in range(2, int(n ** 0.5) + 1):\n"
        "        if n % i == 0:\n            result = True\n    return result\n",
        ["assert is_not_prime(2) == False", "assert is_not_prime(35) == True", "assert is_not_prime(9973) == False"],
    ),
    (
        "def count_words(text):\n    counts = {}\n    for word in text.split():\n"
        "        counts[word] = counts.get(word, 0) + 1\n    best = max(counts, key=counts.get)\n    return best\n",
        ["assert count_words('a b a c b a ' * 20) == 'a'"],
    ),
    (
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        ["assert fib(15) == 610"],
    ),
    (
        "def bubble(xs):\n    xs = list(xs)\n    for i in range(len(xs)):\n        for j in range(len(xs) - 1 - i):\n"
        "            if xs[j] > xs[j + 1]:\n                xs[j], xs[j + 1] = xs[j + 1], xs[j]\n    return xs\n",
        ["assert bubble([5, 3, 8, 1, 9, 2, 7, 4, 6, 0] * 3) == sorted([5, 3, 8, 1, 9, 2, 7, 4, 6, 0] * 3)"],
    ),
]


def _bench_tasks(data_dir, limit):
    """(program, setup, tests) triples: MBPP reference solutions when the data is there, else the
    built-in MBPP-like functions."""
    import json
    import os

    path = os.path.join(data_dir, "mbpp.jsonl") if data_dir else ""
    if path and os.path.exists(path):
        tasks = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                if 11 <= row["task_id"] <= 510:
                    tasks.append((row["code"].replace("\r\n", "\n"), row["test_setup_code"], row["test_list"]))
        return tasks[:limit], "mbpp test split, reference solutions"
    return [(p, "", t) for p, t in _BENCH_PROGRAMS], "built-in MBPP-like functions"


def _run_one(program, setup, test, traced):
    """Run a test like the sandbox does (program, setup, test), returning plain data."""
    g = {"__name__": "__candidate__"}
    outcome = "pass"
    tracer = Tracer({"<program>": "program", "<test>": "test"}) if traced else None
    if tracer:
        tracer.start()
    try:
        exec(compile(program, "<program>", "exec"), g)
        if setup:
            exec(compile(setup, "<test>", "exec"), g)
        exec(compile(test, "<test>", "exec"), g)
    except BaseException as error:  # noqa: BLE001 - a benchmark of arbitrary code
        outcome = type(error).__name__
    finally:
        if tracer:
            tracer.stop()
    return {"outcome": outcome, "trace": tracer.result() if tracer else None}


def _forked(function, *args):
    """function(*args) in a forked child (like a sandbox test process); its marshalled result."""
    import marshal
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            import signal

            signal.alarm(10)
            data = marshal.dumps(function(*args))
        except BaseException:  # noqa: BLE001
            data = marshal.dumps(None)
        with os.fdopen(write, "wb") as out:
            out.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return marshal.loads(data) if data else None


def _in_process_times(program, setup, tests, repeats):
    import time

    times = {}
    for traced in (False, True):
        start = time.process_time()  # CPU time: the machine is shared, wall time is noisy
        for _ in range(repeats):
            for test in tests:
                _run_one(program, setup, test, traced)
        times[traced] = time.process_time() - start
    return [times[False], times[True]]


def _bench(argv) -> int:
    import argparse
    import json
    import os
    import time

    parser = argparse.ArgumentParser(prog="python -m engine.execution.sandbox.tracer --bench")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--data", default=os.environ.get("EGCFG_DATA", ""), help="folder with mbpp.jsonl")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="in-process repetitions per task")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")  # MBPP references have invalid escape sequences (SyntaxWarning)
    tasks, source = _bench_tasks(args.data, args.tasks)

    whole = {False: 0.0, True: 0.0}
    runs = 0
    events = 0
    for program, setup, tests in tasks:
        for test in tests:
            for traced in (False, True):
                start = time.perf_counter()
                result = _forked(_run_one, program, setup, test, traced)
                whole[traced] += time.perf_counter() - start
                if traced and result and result["trace"]:
                    events += len(result["trace"]["events"])
            runs += 1
    untraced_in, traced_in = 0.0, 0.0
    for program, setup, tests in tasks:
        pair = _forked(_in_process_times, program, setup, tests, args.repeats)
        if pair:
            untraced_in += pair[0]
            traced_in += pair[1]
    report = {
        "python": sys.version.split()[0],
        "backend": "sys.monitoring" if hasattr(sys, "monitoring") else "sys.settrace",
        "workload": source,
        "tasks": len(tasks),
        "test_runs": runs,
        "whole_run_untraced_s": round(whole[False], 4),
        "whole_run_traced_s": round(whole[True], 4),
        "whole_run_ratio": round(whole[True] / whole[False], 2) if whole[False] else None,
        "traced_runs_per_s_one_core": round(runs / whole[True], 1) if whole[True] else None,
        "in_process_untraced_s": round(untraced_in, 4),
        "in_process_traced_s": round(traced_in, 4),
        "in_process_ratio": round(traced_in / untraced_in, 2) if untraced_in else None,
        "mean_events_per_trace": round(events / runs, 1) if runs else 0,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    if "--bench" in sys.argv[1:]:
        sys.exit(_bench(sys.argv[1:]))
    print("usage: python -m engine.execution.sandbox.tracer --bench [--data DIR] [--tasks N]", file=sys.stderr)
    sys.exit(2)
