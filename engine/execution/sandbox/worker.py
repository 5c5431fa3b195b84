"""The fork server that runs candidate programs (stdlib only; started by engine/execution/executor.py).

It runs inside bubblewrap (or, without it, directly on the host under resource limits only) and
talks to the host over its stdin/stdout with length-prefixed JSON frames. Per test:

    worker (fork server, trusted)
      └─ M  supervisor, trusted, runs no candidate code: unshares a PID namespace, enforces the
         │  wall-clock limit, drains output with caps, reads T's result, kills T, reports JSON
         └─ T  PID 1 of the new namespace, untrusted: rlimits, stdin=/dev/null, stdout/stderr to
               a capped pipe, runs program + setup + test under the tracer, sends one marshal
               frame on its result pipe

Killing T (PID 1) kills everything in its namespace: children, double-forked and setsid'd
daemons. Leaf values leave T as tagged plain data; M validates them and only JSON reaches the
host, which judges the verdict itself (engine/execution/verdict.py).

This file is the entry script: it loads its folder as the private package ``_egcfg_sandbox``
and runs the fork-server loop. The parts, each readable on its own:
    pristine.py   originals captured before any candidate code runs
    channel.py    host frames, and T's result frame (packed by T, parsed by M)
    spawn.py      clone()/fork of T and the PID-namespace probe
    supervise.py  M: the clock, the pipes, the kill, the report
    candidate.py  T: its setup and the run of program + test
    encode.py     leaf values -> tagged plain data (in T)
    clean.py      M's strict check of what T sent, and its JSON form
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import signal
import sys

SANDBOX_PACKAGE = "_egcfg_sandbox"  # this folder, loaded as a package of its own (no engine/ on sys.path)
# Stdlib modules imported once here so each test does not pay for them.
PRELOAD = ("ast", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "operator", "copy", "typing", "random", "io", "traceback", "array", "fractions")


def _load_sandbox_package(folder: str):
    """Load this folder as the package `_egcfg_sandbox`, so the modules here can import their
    siblings relatively without engine/ (or anything else of egcfg) being importable inside."""
    spec = importlib.util.spec_from_file_location(SANDBOX_PACKAGE, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules[SANDBOX_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def _load_tracer(path):
    """The tracer (tracer.py beside this file, or the path the host names), imported as a module
    of the sandbox package; on failure tests still run, untraced."""
    if not path or not os.path.exists(path):
        return None, "tracer not available"
    try:
        folder = os.path.dirname(os.path.abspath(path))
        if SANDBOX_PACKAGE not in sys.modules:
            _load_sandbox_package(folder)
        name = os.path.splitext(os.path.basename(path))[0]
        module = importlib.import_module(f"{SANDBOX_PACKAGE}.{name}")
        return module.Tracer, ""
    except Exception as error:  # noqa: BLE001 - report it; tests still run untraced
        return None, f"{type(error).__name__}: {error}"[:300]


def main() -> int:
    # The parts, from the package loaded above (pristine.py captures its originals right here).
    channel, spawn, supervise = (importlib.import_module(f"{SANDBOX_PACKAGE}.{name}")
                                 for name in ("channel", "spawn", "supervise"))

    config = json.loads(sys.argv[1])
    host_in, host_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a stray print in this process cannot corrupt the protocol
    os.close(devnull)
    spawn.libc.prctl(spawn.PR_SET_PDEATHSIG, signal.SIGKILL)
    # Not dumpable: T (same uid) cannot read or write this process's memory through /proc or ptrace.
    spawn.libc.prctl(spawn.PR_SET_DUMPABLE, 0)
    tracer_class, tracer_error = _load_tracer(config.get("tracer"))
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    if config.get("project_root"):
        sys.path.insert(0, config["project_root"])
    namespace = spawn.probe_namespace(config)
    rules = config.get("landlock")
    if rules:  # no namespaces here: Landlock confines this worker and everything it starts
        landlock = importlib.import_module(f"{SANDBOX_PACKAGE}.landlock")
        landlock.restrict(int(rules["abi"]), rules["read"], rules["write"], rules["devices"], deny_tcp=True)
    sys.setrecursionlimit(10_000)  # wipe() walks trees as deep as a path allows; T resets it to 1000
    config["tmp_mode"] = os.stat(config["tmp"]).st_mode & 0o7777
    kept = kept_identities(config["tmp"], config.get("keep", ()))
    gc.collect()
    gc.freeze()  # fewer copy-on-write page faults in the forked children
    channel.write_frame(host_out, {"hello": True, "namespace": namespace, "pid": os.getpid(),
                                   "tracer": tracer_class is not None, "tracer_error": tracer_error})
    while True:
        task = channel.read_frame(host_in)
        if task is None:
            return 0
        report = supervise.run_task(task, config, namespace, tracer_class)
        report["id"] = task.get("id")
        moved = [path for path, identity in kept.items() if _identity(path) != identity]
        if moved:  # e.g. a folder above the project renamed and a look-alike planted in its place
            report["retire"] = f"the test replaced {moved[0]}"
        channel.write_frame(host_out, report)
        if moved:
            return 0  # the host starts a fresh worker (a fresh scratch) for the next test
        try:
            os.chmod(config["tmp"], config["tmp_mode"])  # the candidate may have locked it
        except OSError:
            pass
        wipe(config["tmp"], config.get("keep", ()))
        if config.get("shm"):
            wipe(config["shm"])


def kept_identities(directory: str, keep=()) -> dict[str, tuple[int, int] | None]:
    """(device, inode) of each folder kept in the scratch and of its parents below it: bwrap made
    those parents in the writable scratch, so a test could rename one and plant a look-alike that
    wipe() would then keep."""
    identities = {}
    for path in keep:
        while path.startswith(directory.rstrip("/") + "/"):
            identities[path] = _identity(path)
            path = os.path.dirname(path)
    return identities


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def wipe(directory: str, keep=()) -> None:
    """Empty the private scratch directory after every test (whatever the candidate left)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        path = entry.path
        if path in keep:
            continue
        if any(k.startswith(path + "/") for k in keep):
            wipe(path, keep)
            continue
        _remove(path)


def _remove(path: str) -> None:
    try:
        parent = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        _remove_at(parent, os.path.basename(path))
    finally:
        os.close(parent)


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` under the open folder ``dir_fd``, depth first, by file descriptors: paths
    as deep as a candidate can make them would cost a walk from / per entry (seconds under Landlock)."""
    try:
        os.unlink(name, dir_fd=dir_fd)  # files and links (a link to a folder too)
        return
    except IsADirectoryError:
        pass
    except OSError:
        return
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except PermissionError:  # the candidate locked it; unlink said it is a folder, not a link
            os.chmod(name, 0o700, dir_fd=dir_fd)
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for entry in list(os.scandir(fd)):
                _remove_at(fd, entry.name)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # Python < 3.11 has no -P: this folder must not be importable by plain names
    _load_sandbox_package(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
