"""Landlock through ctypes (stdlib only): the kernel's unprivileged access control, used where
user namespaces (and so bubblewrap) are not available. Imported by the worker inside the
sandbox and by the host to probe the ABI.

Rights by ABI: 1 file system, 2 rename/link across folders (REFER), 3 truncate, 4 TCP bind and
connect, 5 device ioctl, 6 scoping of abstract unix sockets and signals to the domain."""

from __future__ import annotations

import ctypes
import os

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on x86_64 and arm64
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2
PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the only rights a file rule may hold
READ = EXECUTE | READ_FILE | READ_DIR
DEVICE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class LandlockError(OSError):
    pass


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's Landlock ABI (0: none, or disabled at boot). EGCFG_SANDBOX_SIMULATE=no-landlock
    makes it 0, so tests can play a machine without Landlock."""
    if "no-landlock" in os.environ.get("EGCFG_SANDBOX_SIMULATE", "").split(","):
        return 0
    version = _syscall(ctypes.c_long(SYS_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(int(version), 0)


def handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _attr_size(abi: int) -> int:
    return 24 if abi >= 6 else 16 if abi >= 4 else 8


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise LandlockError(errno, f"landlock {what}: {os.strerror(errno)}")
    return result


def restrict(abi: int, read=(), write=(), devices=(), deny_tcp: bool = True, scope: bool = True,
             file_system: bool = True) -> None:
    """Restrict this process and everything it starts from now on: reads (and execution) only
    beneath ``read``, everything beneath ``write``, read/write of the ``devices`` files; no TCP
    bind/connect (ABI 4+); abstract unix sockets and signals scoped to this domain (ABI 6+).
    Paths that do not exist are skipped. Stacks on any domain this process is already in."""
    ruleset = build_ruleset(abi, read, write, devices, deny_tcp, scope, file_system)
    try:
        restrict_self(ruleset)
    finally:
        os.close(ruleset)


def build_ruleset(abi: int, read=(), write=(), devices=(), deny_tcp: bool = True, scope: bool = True,
                  file_system: bool = True) -> int:
    """The ruleset ``restrict`` enforces, as a file descriptor (built once, enforced by each test
    process it is inherited by: restrict_self is then one system call)."""
    # A layer that does not restrict files must still handle REFER and allow it everywhere:
    # Landlock denies moving files between folders in any layer that leaves REFER unhandled. (At
    # ABI 1 it handles EXECUTE, allowed everywhere, so that the ruleset is not empty.)
    open_right = (REFER if abi >= 2 else EXECUTE) if not file_system else 0
    attr = _RulesetAttr(handled_fs(abi) if file_system else open_right,
                        NET_BIND_TCP | NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scope and abi >= 6 else 0)
    ruleset = _check(_syscall(ctypes.c_long(SYS_CREATE_RULESET), ctypes.byref(attr),
                              ctypes.c_size_t(_attr_size(abi)), ctypes.c_uint32(0)), "create_ruleset")
    try:
        if open_right:
            _add_path(ruleset, "/", open_right)
        if file_system:
            handled = attr.handled_access_fs
            for paths, rights in ((read, READ), (write, handled), (devices, DEVICE)):
                for path in paths:
                    _add_path(ruleset, path, rights & handled)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict_self(ruleset: int, no_new_privs: bool = True) -> None:
    """Enforce a ruleset on this process (no_new_privs first, as Landlock requires, unless the
    caller has set it already)."""
    if no_new_privs:
        _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _check(_syscall(ctypes.c_long(SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)), "restrict_self")


def _add_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _check(_syscall(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(ruleset), ctypes.c_int(RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)), f"add_rule {path}")
    finally:
        os.close(fd)
