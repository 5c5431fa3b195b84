"""The ``sys.monitoring`` back end (CPython 3.12 and later).

Callbacks fire only for the traced code objects: PY_START sees every code object once and DISABLEs
the ones outside the traced files, the rest get local LINE/RETURN/YIELD/RESUME/JUMP events; RAISE
and PY_UNWIND are global. LINE does not fire when a loop jumps back within one line, so JUMP
events stand in for those (found once per code object with ``dis``). It gives the same events as
the settrace back end. Standard library only (this runs inside the sandbox); tracer.py imports this
module only where ``sys.monitoring`` exists, so ``dis`` is imported once per sandbox worker, not in
every forked test process.
"""

from __future__ import annotations

import dis
import sys
import threading

from .recorder import GENERATOR_FLAGS, SKIPPED_CODE_NAMES

__all__ = ["MonitoringBackend"]

class MonitoringBackend:
    """sys.monitoring (3.12+): PY_START finds the traced code objects (other code is DISABLEd at
    once), which then get local LINE/RETURN/YIELD events; RAISE and PY_UNWIND are global."""

    def __init__(self, tracer):
        self.tracer = tracer  # the Tracer (tracer.py): its recorder gets the events
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
        if file is None or code.co_name in SKIPPED_CODE_NAMES:
            return None
        return file

    def on_start(self, code, offset):
        try:
            file = self._traced(code)
            if file is None:
                return sys.monitoring.DISABLE
            if self.tracer.thread != threading.get_ident() or self.tool is None:
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
            if self.tracer.thread == threading.get_ident() and code.co_flags & GENERATOR_FLAGS:
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
            if self.tracer.thread == threading.get_ident():
                frame = sys._getframe(1)
                state = self.tracer.states.get(frame)
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
            if self.tracer.thread == threading.get_ident():
                frame = sys._getframe(1)
                state = self.tracer.states.get(frame)
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
            if self.tracer.thread == threading.get_ident():
                self.tracer.on_return(sys._getframe(1), value, False)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_yield(self, code, offset, value):
        try:
            if self.tracer.thread == threading.get_ident():
                self.tracer.on_return(sys._getframe(1), value, True)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_raise(self, code, offset, exc):
        try:
            if id(code) in self.codes and self.tracer.thread == threading.get_ident():
                self.tracer.on_exception(sys._getframe(1), exc)
        except Exception:
            self.tracer.internal_error()
        return None

    def on_unwind(self, code, offset, exc):
        try:
            if id(code) in self.codes and self.tracer.thread == threading.get_ident():
                self.tracer.on_unwind(sys._getframe(1))
        except Exception:
            self.tracer.internal_error()
        return None
