"""Per-worker cgroups (v1 pids/memory/cpu/cpuacct, or one v2 group): a cap on processes, memory
and CPU for everything a sandbox worker starts, and the accounting benchmarks read. Created by the
executor when this machine lets it (root, or a delegated cgroup); otherwise rlimits stand in."""

from __future__ import annotations

import os
import signal
import time

class Cgroup:
    """Per-worker cgroups (v1 pids/memory/cpu, or one v2 group), when this machine lets us."""

    def __init__(self, name: str, limits):
        self.dirs: list[str] = []
        self.procs_files: list[str] = []
        self.pids = False
        self.version = ""
        self.cpu_usage_file = ""
        memory = (limits.memory_mb + 256) << 20
        settings = {
            "pids": {"pids.max": str(limits.max_processes)},
            "memory": {"memory.limit_in_bytes": str(memory)},
            "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"},  # one core
            "cpuacct": {},  # accounting only (benchmarks report CPU seconds per run)
        }
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            self._make_v2(name, limits, memory)
        else:
            for controller, files in settings.items():
                self._make_v1(controller, name, files)

    @staticmethod
    def probe_dirs() -> list[str]:
        """Where this process would create its cgroups (a placeholder name under each parent)."""
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            return [os.path.join("/sys/fs/cgroup", _own_cgroup("").lstrip("/"), "x")]
        found = []
        for controller in ("pids", "memory", "cpu", "cpuacct"):
            base = _v1_mount(controller)
            if base is not None:
                found.append(os.path.join(base, _own_cgroup(controller).lstrip("/"), "x"))
        return found

    def _make_v1(self, controller: str, name: str, files: dict) -> None:
        base = _v1_mount(controller)
        if base is None:
            return
        path = os.path.join(base, _own_cgroup(controller).lstrip("/"), name)
        if not self._create(path, files):
            return
        if controller == "pids":
            self.pids, self.version = True, "v1"
        if controller == "cpuacct":
            self.cpu_usage_file = os.path.join(path, "cpuacct.usage")

    def _make_v2(self, name: str, limits, memory: int) -> None:
        path = os.path.join("/sys/fs/cgroup", _own_cgroup("").lstrip("/"), name)
        files = {"pids.max": str(limits.max_processes), "memory.max": str(memory), "cpu.max": "100000 100000"}
        if self._create(path, files, required=("pids.max",)):
            self.pids, self.version = True, "v2"

    def _create(self, path: str, files: dict, required=None) -> bool:
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError:
            return False
        for filename, value in files.items():
            try:
                with open(os.path.join(path, filename), "w") as handle:
                    handle.write(value)
            except OSError:
                if required is None or filename in required:
                    _rmdir(path)
                    return False
        self.dirs.append(path)
        self.procs_files.append(os.path.join(path, "cgroup.procs"))
        return True

    def confirm_joined(self) -> None:
        """If the worker did not land in its pids cgroup, do not claim that cap."""
        for procs in self.procs_files:
            if "pids" in procs or self.version == "v2":
                try:
                    with open(procs) as handle:
                        self.pids = self.pids and bool(handle.read().split())
                except OSError:
                    self.pids = False

    def cpu_seconds(self) -> float | None:
        """CPU time used by this worker's processes so far (None where not accounted)."""
        try:
            with open(self.cpu_usage_file) as handle:
                return int(handle.read()) / 1e9
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        for procs in self.procs_files:
            for _ in range(3):
                try:
                    with open(procs) as handle:
                        pids = [int(p) for p in handle.read().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for path in self.dirs:
            for _ in range(50):
                if _rmdir(path):
                    break
                time.sleep(0.02)


def remove_stale() -> None:
    """cgroups left by executors whose process died without closing them (egcfg-<pid>-...)."""
    parents = {os.path.dirname(d) for d in Cgroup.probe_dirs()}
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            parts = name.split("-")
            if len(parts) == 4 and parts[0] == "egcfg" and parts[1].isdigit() and not os.path.exists(f"/proc/{parts[1]}"):
                stale = Cgroup.__new__(Cgroup)
                stale.dirs, stale.procs_files = [os.path.join(parent, name)], [os.path.join(parent, name, "cgroup.procs")]
                stale.remove()


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _v1_mount(controller: str) -> str | None:
    for candidate in (f"/sys/fs/cgroup/{controller}", f"/sys/fs/cgroup/{controller},cpuacct"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return candidate
    return None


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for a v1 controller ("" = the v2 line)."""
    try:
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                names = controllers.split(",") if controllers else [""]
                if controller in names:
                    return path
    except OSError:
        pass
    return "/"
