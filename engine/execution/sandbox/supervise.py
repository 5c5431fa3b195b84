"""M, the supervisor of one test (trusted; it runs no candidate code).

It starts T (in a fresh PID namespace when it can), enforces the wall-clock limit, drains T's
output with caps, reads T's result frame, kills T (as PID 1 of its namespace that kills every
process T left) and reports plain JSON. With a raw clone() the worker itself plays M; otherwise a
forked M unshares the namespace first."""

from __future__ import annotations

import json
import os
import select
import signal

from . import candidate
from .channel import ResultFrame, draw_nonce, drawn_nonce, write_all
from .clean import clean_result
from .pristine import exit_now, monotonic
from .spawn import NAMESPACE_FLAGS, PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, clone_available, libc, spawn

SOFT_TIMEOUT_GRACE = 0.3  # seconds T gets to report a partial trace after the deadline


def run_task(task: dict, config: dict, namespace: str, tracer_class) -> dict:
    """Run one test in T and return the report. With a raw clone() the worker itself supervises T
    (saves a fork per test); otherwise a forked supervisor M unshares the namespace first."""
    task["compiled_leaves"] = candidate.cached_leaves(task)
    candidate.prepare(config)
    if clone_available():
        return supervise(task, config, namespace, tracer_class, direct=True)
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # M
        try:
            os.close(report_r)
            report = supervise(task, config, namespace, tracer_class)
            write_all(report_w, json.dumps(report).encode())
            exit_now(0)
        finally:
            exit_now(70)
    os.close(report_w)
    chunks = []
    while True:
        chunk = os.read(report_r, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(report_r)
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"status": "crash", "detail": "the sandbox supervisor died", "signal": _signal_of(status),
                "seconds": 0.0, "output": ""}


def _signal_of(status: int):
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def supervise(task: dict, config: dict, namespace: str, tracer_class, direct: bool = False) -> dict:
    flags = NAMESPACE_FLAGS[namespace]
    if not direct:  # this is M, a fresh process: unshare here, then T is PID 1 of the namespace
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if namespace == "none":
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to M, which kills them
        elif libc.unshare(flags) != 0:
            return {"status": "crash", "detail": "could not create a PID namespace", "seconds": 0.0, "output": ""}
        flags = 0
    limits = config["limits"]
    timeout = float(task["timeout"])
    draw_nonce()  # into the header page T inherits: no Python object in T holds it
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    start = monotonic()
    pid = spawn(flags)
    if pid == 0:  # T
        try:
            candidate.child(task, config, out_w, res_w, tracer_class)
        except BaseException as error:  # noqa: BLE001 - the harness failed before a result: say what, on stderr
            try:
                os.write(out_w, f"egcfg sandbox harness: {type(error).__name__}: {error}\n".encode()[:500])
            except BaseException:  # noqa: BLE001
                pass
        finally:
            exit_now(71)
    os.close(out_w)
    os.close(res_w)
    if pid < 0:
        os.close(out_r)
        os.close(res_r)
        return {"status": "crash", "detail": "could not start the test process", "seconds": 0.0, "output": ""}
    watch = Watch(pid, out_r, res_r, drawn_nonce(), limits)
    try:
        status = watch.run(start + timeout, soft=bool(task.get("trace")) and tracer_class is not None)
        seconds = monotonic() - start
        watch.drain_output()
        exit_status = watch.kill(orphans=namespace == "none")
    finally:  # the worker supervises T itself (direct): a pipe left open here leaks into every later T
        os.close(out_r)
        os.close(res_r)
    report = {"status": status, "seconds": round(seconds, 6), "output": watch.output_text(),
              "output_bytes": watch.total_output, "signal": None, "exit_code": None}
    if exit_status is not None:
        report["signal"] = _signal_of(exit_status)
        report["exit_code"] = os.WEXITSTATUS(exit_status) if os.WIFEXITED(exit_status) else None
    if watch.result.raw is not None:
        try:
            report["result"] = clean_result(watch.result.raw)
        except Exception as error:  # noqa: BLE001 - anything malformed is the candidate's doing
            report["status"] = "bad_result" if status == "result" else status
            report["detail"] = f"malformed result ({type(error).__name__})"
    elif status == "noresult" and report["signal"] is not None:
        report["status"] = "crash"
    if watch.result.bad:
        report["detail"] = watch.result.bad
    return report


class Watch:
    """M's view of T: output and result pipes, the clock, and the kill."""

    def __init__(self, pid, out_r, res_r, nonce, limits):
        self.pid, self.out_r, self.res_r = pid, out_r, res_r
        self.keep, self.kill_at = int(limits["output_keep"]), int(limits["output_kill"])
        self.output = bytearray()
        self.total_output = 0
        self.result = ResultFrame(nonce)
        self.exit_status = None
        for fd in (out_r, res_r):
            os.set_blocking(fd, False)

    def run(self, deadline: float, soft: bool) -> str:
        poller = select.poll()
        open_fds = {self.out_r, self.res_r}
        for fd in open_fds:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(self.pid)  # readable when T exits: no polling delay
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = -1
        try:
            return self._loop(poller, open_fds, pidfd, deadline, soft)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _loop(self, poller, open_fds, pidfd, deadline, soft) -> str:
        soft_sent = False
        while True:
            now = monotonic()
            if now >= deadline:
                if soft and not soft_sent and self.exit_status is None:
                    soft_sent = True  # ask T for a partial trace; the verdict is "timeout" anyway
                    self._signal(signal.SIGUSR1)
                    deadline = now + SOFT_TIMEOUT_GRACE
                    continue
                return "timeout"
            if self.exit_status is None:
                reaped, status = os.waitpid(self.pid, os.WNOHANG)
                if reaped:
                    self.exit_status = status
            if self.exit_status is not None and self.res_r not in open_fds:
                return "timeout" if soft_sent else "noresult"
            wait = min(deadline - now, 0.05)
            for fd, _ in poller.poll(max(wait, 0) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    continue  # reaped at the top of the loop
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                if fd == self.out_r:
                    self._take_output(data)
                    if self.total_output > self.kill_at:
                        return "output_limit"
                    continue
                state = self.result.feed(data)
                if state == "bad":
                    return "bad_result"
                if state == "done":
                    return "timeout" if soft_sent else "result"
            if self.exit_status is not None and self.res_r in open_fds:
                # T exited (no namespace: a daemon may keep the pipe open); read what is there.
                try:
                    data = os.read(self.res_r, 1 << 16)
                except BlockingIOError:
                    data = b""
                state = self.result.feed(data)
                if state == "done":
                    return "timeout" if soft_sent else "result"
                if state == "bad":
                    return "bad_result"
                if not data:
                    return "timeout" if soft_sent else "noresult"

    def _take_output(self, data: bytes) -> None:
        room = self.keep - len(self.output)
        if room > 0:
            self.output += data[:room]
        self.total_output += len(data)

    def drain_output(self) -> None:
        """Keep what T printed before it sent its result (bounded; daemons may still print)."""
        for _ in range(64):
            try:
                data = os.read(self.out_r, 1 << 16)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._take_output(data)

    def output_text(self) -> str:
        return bytes(self.output).decode("utf-8", "replace")

    def _signal(self, signum: int) -> None:
        if self.exit_status is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self, orphans: bool):
        """SIGKILL T: as PID 1 of its namespace, that kills every process in it."""
        if orphans:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._signal(signal.SIGKILL)
        if self.exit_status is None:
            _, self.exit_status = os.waitpid(self.pid, 0)
        if orphans:
            _kill_orphans()
        return self.exit_status


def _kill_orphans() -> None:
    """Without a PID namespace M is a subreaper: kill and reap whatever T left behind."""
    for _ in range(1000):
        children = _children_of(os.getpid())
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            reaped, _ = os.waitpid(-1, 0 if children else os.WNOHANG)
        except ChildProcessError:
            return
        if not reaped and not children:
            return


def _children_of(parent: int) -> list[int]:
    found = []
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as handle:
            found = [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found
