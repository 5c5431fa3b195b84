"""The ``sys.settrace`` back end (CPython 3.11 and below; also the fallback when no
``sys.monitoring`` tool id is free).

A global trace function picks the frames of the traced files and gives each a local trace function
that forwards line, return and exception events to the recorder. settrace reports a frame left by
an exception as a "return" too; the opcode the frame stopped at tells the two apart. Errors inside
the callbacks are counted by the tracer, never raised into the traced code. Standard library only
(this runs inside the sandbox).
"""

from __future__ import annotations

import sys

from .recorder import SKIPPED_CODE_NAMES

__all__ = ["SettraceBackend"]

try:
    import opcode as _opcode

    _YIELD_VALUE = _opcode.opmap.get("YIELD_VALUE", -1)
    _RETURN_OPS = frozenset(_opcode.opmap[name] for name in ("RETURN_VALUE", "RETURN_CONST") if name in _opcode.opmap)
except Exception:  # pragma: no cover
    _YIELD_VALUE, _RETURN_OPS = -1, frozenset()


class SettraceBackend:
    """sys.settrace: a global function that picks frames, and a per-frame local function."""

    def __init__(self, tracer):
        self.tracer = tracer  # the Tracer (tracer.py): its recorder gets the events
        self.files = tracer.files
        self.lines = True
        self.previous_trace = None

    def start(self) -> None:
        self.previous_trace = sys.gettrace()
        sys.settrace(self.global_trace)

    def stop(self) -> None:
        # Also when the traced code replaced or removed the tracer: put back what was there before.
        sys.settrace(self.previous_trace)

    def stop_lines(self) -> None:
        """Past the event cap: only returns and exceptions still matter."""
        self.lines = False
        for frame in list(self.tracer.states):
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
            if file is None or code.co_name in SKIPPED_CODE_NAMES or not self.tracer.active:
                return None
            state = self.tracer.on_call(frame, code, file)
            if not self.lines:
                frame.f_trace_lines = False
            return self._local_for(state)
        except Exception:
            self.tracer.internal_error()
            return None

    def _local_for(self, state):
        """The local trace function of one frame (``state``: the recorder's state for it)."""
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
