"""Starting T, the per-test process: a raw clone() into fresh namespaces when this machine allows
it, else a plain fork; and the one-time probe of which PID-namespace recipe works here."""

from __future__ import annotations

import ctypes
import os
import signal

from .pristine import exit_now

CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
NAMESPACE_FLAGS = {"pid": CLONE_NEWPID, "user+pid": CLONE_NEWUSER | CLONE_NEWPID, "none": 0}

libc = ctypes.CDLL(None, use_errno=True)
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}.get(os.uname().machine)
_clone_state: list = []  # [syscall function] once probed and working, [None] when not


def clone_available() -> bool:
    return bool(_clone_state and _clone_state[0] is not None)


def _raw_clone(flags: int) -> int:
    """fork() into new namespaces in one step: clone(flags | SIGCHLD) without a new stack, with
    CPython's own before/after-fork hooks (the GIL stays held: PyDLL). -1 when it fails."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _clone_state[0](_SYS_CLONE, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
    else:
        api.PyOS_AfterFork_Parent()
    return pid


def spawn(flags: int) -> int:
    """Start T (0 in the child): in new namespaces via clone() when set up, else a plain fork."""
    if clone_available():
        return _raw_clone(flags)
    try:
        return os.fork()
    except OSError:
        return -1


def _setup_clone() -> None:
    if _SYS_CLONE is None:
        _clone_state.append(None)
        return
    syscall = ctypes.PyDLL(None).syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long] * 6
    _clone_state.append(syscall)


def probe_namespace(config) -> str:
    """Which PID-namespace recipe works here: "pid", "user+pid" or "none" (tried in a child)."""
    recipes = ["pid", "user+pid"]
    if config.get("drop_uid") is None:
        recipes.reverse()  # a user namespace also takes T's capabilities away
    if config.get("direct", True):
        _setup_clone()
    if not config.get("user_namespace", True):  # outside bubblewrap: the host's uids are not mapped
        recipes = ["pid"]  # in a new user namespace, so T could not even enter its scratch folder
    if config.get("force_namespace") == "none":  # tests of the fallback (only ever under bubblewrap)
        recipes = []
    for name in recipes:
        if clone_available():
            pid = _raw_clone(NAMESPACE_FLAGS[name])
            if pid == 0:
                exit_now(0)
            if pid < 0:
                continue
        else:
            pid = os.fork()
            if pid == 0:
                exit_now(0 if libc.unshare(NAMESPACE_FLAGS[name]) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return name
    if clone_available():
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1)  # no namespace: orphans come back to the worker
    return "none"
