"""The event recorder: turns the back ends' callbacks into a bounded, loop-compressed event list.

Events: ``call`` (values = arguments), ``line`` (values = variables the line rebound or mutated,
after it ran), ``return`` (one value named "return"; a generator's yield is a return event whose
value is named "yield"), ``exception`` (where it was raised; not repeated in the frames it passes
through; a frame left by an exception has no return event), ``skip`` (count = executions of that
line left out by loop compression). Lambdas and comprehensions are part of their line (3.12
inlines comprehensions, so they have no frames to show there anyway).

Why the recorder looks the way it does (the cost budget is ~3x untraced for whole runs):
- a line's variables are diffed against the previous snapshot by identity, plus a fingerprint of
  container contents (fingerprints.py) for mutable values; a line past its first iterations only
  re-checks the names it mutated in place during them;
- loop compression: for each line, the first ``head_iterations`` executions are recorded; later
  ones go to a "tail run" that keeps only the latest iteration (cut where a loop's head line
  repeats) and whose reprs are computed only if it survives; skip events count the rest;
- past ``max_events`` nothing more is recorded (the ``stop_lines`` hook lets the back end switch
  line callbacks off) except the final exception and the final returns at depth 0 and 1;
- values are shown as bounded reprs (reprs.py), computed only for events that are kept.

The recorder knows nothing of how callbacks arrive: tracer.py attaches a back end
(settrace_backend.py or monitoring_backend.py) that calls ``on_call``/``on_line``/``on_return``/
``on_unwind``/``on_exception`` for frames of the traced files only. Standard library only (this
runs inside the sandbox).
"""

from __future__ import annotations

from .fingerprints import IMMUTABLE_TYPES, fingerprint
from .reprs import HIDDEN_TYPES, ReprContext, exception_message, safe_repr, type_name

__all__ = ["GENERATOR_FLAGS", "SKIPPED_CODE_NAMES", "Recorder"]

# Code objects that are not traced as frames of their own: their line is the enclosing line, and
# 3.12 inlines comprehensions anyway, so skipping them keeps both interpreters' traces alike.
SKIPPED_CODE_NAMES = frozenset({"<lambda>", "<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})
GENERATOR_FLAGS = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_VARARGS, _VARKEYWORDS = 0x04, 0x08
_MAX_RUN = 64  # events kept in a tail run at most (recursion can make runs long)

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
        self.is_generator = bool(info.code.co_flags & GENERATOR_FLAGS)
        self.mutated = False
        self.last_line = 0  # the frame's previous line event (a smaller or equal line = a jump back)


class Recorder:
    """Records calls, lines (with the variables each line changed), returns and exceptions of the
    frames a back end reports; see the module docstring. ``files`` maps a code file name to the
    name events carry ("program", "test")."""

    def __init__(self, files: dict[str, str], *, max_events: int = 2000, head_iterations: int = 3):
        self.files = dict(files)
        self.max_events = max(1, int(max_events))
        self.head = max(1, int(head_iterations))
        self._ctx = ReprContext(frozenset(self.files))
        self._events: list[list] = []
        # The tail run: events past their line's first iterations, not yet recorded. Positions are
        # absolute (they only grow), so a stale position in _CodeInfo.last is simply < _run_start.
        self._run: list[list] = []
        self._run_offset = 0  # absolute position of _run[0]
        self._run_start = 0  # absolute position of the first live event of the run
        self._run_infos: list[_CodeInfo] = []  # code infos with events in the run
        self._finals: list[list] = []  # after the cap: the final returns / exception
        self.states: dict = {}  # frame -> _FrameState, for frames that have not returned
        self._infos: dict[int, _CodeInfo] = {}  # id(code) -> info (the info keeps the code alive)
        self._propagating = None  # the exception object last recorded (not re-recorded per frame)
        self._total = 0
        self._truncated = False

    def stop_lines(self) -> None:
        """Hook, called once when the event cap is reached: from then on only returns and
        exceptions matter, so whoever delivers the callbacks may switch line events off."""

    # -- values ---------------------------------------------------------------------------------
    def _depth_of(self, frame) -> int:
        states = self.states
        parent = frame.f_back
        while parent is not None:
            state = states.get(parent)
            if state is not None:
                return state.depth + 1
            parent = parent.f_back
        return 0

    def _values(self, pairs) -> list:
        ctx = self._ctx
        return [[name, safe_repr(value, ctx), type_name(value)] for name, value in pairs]

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
            if cls in HIDDEN_TYPES or name[:2] == "__":  # functions, modules, classes, dunders
                continue
            if cls in IMMUTABLE_TYPES:
                if name in fingerprints:
                    del fingerprints[name]
            else:
                fingerprints[name] = fingerprint(value)
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
                new = fingerprint(value)
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
                names.update(name for name, value in changed if type(value) not in IMMUTABLE_TYPES)
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
        self.stop_lines()

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
        states = self.states
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
        state = self.states.get(frame)
        if state is None:
            return
        if state.pending is not None:
            self._settle(state, frame)
        if not is_yield:
            del self.states[frame]
        self._total += 1
        name = "yield" if is_yield else "return"
        event = ["return", state.file, frame.f_lineno, state.func, state.depth, [(name, value)], "", "", 0, True]
        if self._truncated:
            if state.depth <= 1 and not is_yield:
                self._keep_final(event)
            return
        self._admit(state.info, _YIELD_KEY if is_yield else _RETURN_KEY, event)

    def on_unwind(self, frame) -> None:
        state = self.states.pop(frame, None)
        if state is not None and state.pending is not None:
            self._settle(state, frame)

    def on_exception(self, frame, exc) -> None:
        state = self.states.get(frame)
        if state is None:
            return
        if exc is self._propagating:  # the same exception passing through a caller
            return
        # Record first, then remember it as propagating: if recording fails (a RecursionError
        # near the recursion limit), the caller's frame records it instead.
        line = frame.f_lineno
        event = ["exception", state.file, line, state.func, state.depth, None,
                 type_name(exc), exception_message(exc), 0, True]
        self._total += 1
        if self._truncated:
            self._keep_final(event)
        else:
            self._admit(state.info, -10 - line, event)
        self._propagating = exc
        if state.pending is not None:
            self._settle(state, frame)

    # -- finishing ------------------------------------------------------------------------------
    def finish(self) -> dict:
        """The recorded trace as ``Trace.to_dict()`` data; call it once, after tracing stopped."""
        for state in self.states.values():
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

