"""What T does to itself after its setup and before any candidate code: no capabilities (not even
in the per-test user namespace), no_new_privs, the Landlock scopes of its own (signals and
abstract unix sockets stay inside the test), then the seccomp filter the host compiled."""

from __future__ import annotations

import ctypes

from . import landlock

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 38, 22
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class ConfineError(OSError):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def drop_capabilities() -> None:
    """Empty the effective, permitted and inheritable sets (the ambient set is empty: a new user
    namespace starts without one and nothing here raises it). no_new_privs, set before, keeps
    execve from granting any back (setuid files, file capabilities, or root's own rule), so
    the bounding set and securebits need no change: one system call per test."""
    if _libc.capset(ctypes.byref(_CAP_HEADER), _NO_CAPS) != 0:
        raise ConfineError(ctypes.get_errno(), "capset failed")


_CAP_HEADER = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
_NO_CAPS = (_CapData * 2)()


class Prepared:
    """What the worker builds once, so that each test process only enforces it: the Landlock
    ruleset (an inherited file descriptor) and the seccomp program (memory inherited by fork)."""

    def __init__(self, config: dict):
        self.ruleset = -1
        self.program = None
        self._buffer = None
        abi = int(config.get("landlock_scope_abi") or 0)
        if abi >= 1:  # a domain of its own: no ptrace or /proc/PID access outside it, and (ABI 6+)
            # no signals or abstract unix sockets outside it: the worker and the host stay out of reach
            self.ruleset = landlock.build_ruleset(abi, deny_tcp=bool(config.get("deny_network")), scope=True,
                                                  file_system=False)
        bpf = bytes.fromhex(config["seccomp_bpf"]) if config.get("seccomp_bpf") else b""
        if bpf:
            if len(bpf) % 8:
                raise ConfineError(22, "malformed seccomp filter")
            self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
            self.program = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buffer))


def load_seccomp(bpf: bytes) -> None:
    """Install a compiled classic-BPF seccomp filter (8-byte instructions) on this thread; every
    thread and process started afterwards inherits it."""
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    prepared = Prepared({"seccomp_bpf": bpf.hex()})  # holds the program's buffer until it is loaded
    _load(prepared.program)


def _load(program) -> None:
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise ConfineError(ctypes.get_errno(), "seccomp filter refused")


def enter_domain(prepared: Prepared) -> None:
    """T's own Landlock domain (first thing in T: the ruleset's descriptor is closed soon after)."""
    if prepared.ruleset >= 0:
        landlock.restrict_self(prepared.ruleset)


def confine(prepared: Prepared) -> None:
    """The rest, as prepared (no_new_privs is already set); raises if a promised protection cannot
    be applied."""
    drop_capabilities()
    if prepared.program is not None:
        _load(prepared.program)
