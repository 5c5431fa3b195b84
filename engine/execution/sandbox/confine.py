"""What T does to itself after its setup and before any candidate code: no capabilities (not even
in the per-test user namespace), no_new_privs, the Landlock scopes of its own (signals and
abstract unix sockets stay inside the test), then the seccomp filter the host compiled."""

from __future__ import annotations

import ctypes

from . import landlock

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT = 38, 22, 24, 28, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
# NOROOT, NO_SETUID_FIXUP and KEEP_CAPS_OFF, each with its lock: uid 0 never means capabilities again.
SECUREBITS_LOCKED = 0x01 | 0x02 | 0x04 | 0x08 | 0x20
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
    """Empty every capability set; lock the securebits so no later uid change brings any back."""
    _libc.prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED, 0, 0, 0)  # needs CAP_SETPCAP: best effort
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise ConfineError(ctypes.get_errno(), "capset failed")


def load_seccomp(bpf: bytes) -> None:
    """Install a compiled classic-BPF seccomp filter (8-byte instructions) on this thread; every
    thread and process started afterwards inherits it."""
    if not bpf or len(bpf) % 8:
        raise ConfineError(22, "malformed seccomp filter")
    buffer = ctypes.create_string_buffer(bpf, len(bpf))
    program = _SockFprog(len(bpf) // 8, ctypes.addressof(buffer))
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise ConfineError(ctypes.get_errno(), "seccomp filter refused")


def confine(config: dict) -> None:
    """All of the above, as the config says; raises if a promised protection cannot be applied."""
    drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    scope_abi = int(config.get("landlock_scope_abi") or 0)
    if scope_abi >= 1:  # a domain of its own: no ptrace or /proc/PID access outside it, and (ABI 6+)
        # no signals or abstract unix sockets outside it: the worker and the host stay out of reach
        landlock.restrict(scope_abi, deny_tcp=bool(config.get("deny_network")), scope=True, file_system=False)
    bpf = config.get("seccomp_bpf")
    if bpf:
        load_seccomp(bytes.fromhex(bpf))
