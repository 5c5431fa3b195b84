"""The tracer that runs inside the sandbox: what a candidate program did while one test ran.

``Tracer`` is the facade the sandbox worker uses: it picks a back end (``sys.monitoring`` on 3.12+,
monitoring_backend.py, with callbacks only for the traced code objects; ``sys.settrace`` on 3.11
and below, settrace_backend.py), feeds the recorder (recorder.py: events, loop compression, caps;
values as bounded reprs from reprs.py), and watches the time budget. Both back ends give the same
events (tests/engine/execution/sandbox/test_tracer.py checks that on the 3.12/3.13 interpreters
when they exist). ``Tracer.result()`` is the ``Trace.to_dict()`` shape of
``engine/execution/trace.py`` as plain lists/dicts/strings (marshal/JSON-able).

Stdlib only and cheap to import: the sandbox worker loads this folder as the package
``_egcfg_sandbox`` and imports this module before any candidate code runs; the modules here import
each other relatively. Host side they are ``engine.execution.sandbox.<name>``.

Time budget: past ``max_seconds`` of traced running the tracer detaches completely (truncated):
with a trace function installed, CPython 3.11 runs every frame in its slower tracing mode, which
costs 2-3x on heavy loops even where no callback fires; the verdict does not depend on the trace.

Robustness: errors inside the tracer are swallowed (never raised into the traced code); other
threads are not traced; if the traced code removes or replaces the trace function, the trace so far
is still returned. Only ``Exception``s are swallowed, so a ``BaseException`` raised by a signal
handler (a soft timeout) still interrupts the traced code. Known limit: a runaway recursion that
hits the recursion limit inside a tracer callback ends tracing there (no RecursionError event).
"""

from __future__ import annotations

import sys
import threading
import time

from .recorder import Recorder
from .reprs import bounded_repr, type_name
from .settrace_backend import SettraceBackend

if hasattr(sys, "monitoring"):
    from .monitoring_backend import MonitoringBackend
else:
    MonitoringBackend = None

__all__ = ["MAX_SECONDS", "Tracer", "bounded_repr", "type_name"]

# Past this much wall time the tracer detaches (see the module docstring); bench validate adds it
# to its per-test limit when tracing.
MAX_SECONDS = 1.0
_MAX_INTERNAL_ERRORS = 20  # past this many errors inside the tracer, it gives up tracing


class Tracer(Recorder):
    """Records calls, lines (with the variables each line changed), returns and exceptions of the
    frames whose code file is in ``files`` (see recorder.py). Use as a context manager on the
    thread that runs the test, then call ``result()``."""

    def __init__(self, files: dict[str, str], *, max_events: int = 2000, head_iterations: int = 3,
                 max_seconds: float = MAX_SECONDS):
        super().__init__(files, max_events=max_events, head_iterations=head_iterations)
        self.max_seconds = max_seconds
        self._deadline = float("inf")
        self._ticks = 0
        self._errors = 0
        self.thread = None  # the ident of the thread being traced (back ends ignore the others)
        self.active = False
        self._backend = None
        self._finished = None

    def __enter__(self) -> Tracer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> bool:
        self.stop()
        return False

    def start(self) -> None:
        self.thread = threading.get_ident()
        self.active = True
        self._deadline = time.perf_counter() + self.max_seconds
        if MonitoringBackend is not None:
            backend = MonitoringBackend(self)
            if backend.start():  # False when no monitoring tool id is free
                self._backend = backend
                return
        self._backend = SettraceBackend(self)
        self._backend.start()

    def stop(self) -> None:
        if not self.active:
            return
        self.active = False
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
                self._finished = self.finish()
            except Exception:
                self._finished = {"events": [], "truncated": True, "total_events": self._total}
        return self._finished

    # -- called by the back ends and the recorder (never raise into traced code) -----------------
    def stop_lines(self) -> None:
        """Past the event cap: the back end switches line callbacks off."""
        if self._backend is not None:
            self._backend.stop_lines()

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
        if self._errors > _MAX_INTERNAL_ERRORS:
            self._truncated = True
            self.stop()
