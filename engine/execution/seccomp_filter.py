"""The seccomp filter of the candidate's process, built on the host with libseccomp (pyseccomp)
and handed to the sandbox as compiled BPF; the worker installs it in T (sandbox/confine.py).

Denied (EPERM unless noted): kernel surfaces a test never needs and sandbox escapes rely on:
io_uring, keyrings, bpf, perf events, userfaultfd, kexec and modules, every mount call, new
namespaces (unshare, setns, clone with a CLONE_NEW* flag; clone3 answers ENOSYS so libc falls
back to clone, whose flags can be checked), ptrace and reading other processes' memory, and
sockets of any family but AF_INET/AF_INET6 (none at all where there is no network namespace).
AF_UNIX sockets cannot be created, so no host unix socket, pathname or abstract, can be
connected to; socketpair() still works (multiprocessing, subprocess and threads keep working).
Other architectures' system calls (the i386 ABI on x86_64, x32) kill the process."""

from __future__ import annotations

import errno
import functools
import os
import tempfile

DENIED_CALLS = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "chroot", "unshare", "setns", "ptrace", "process_vm_readv",
    "process_vm_writev", "pidfd_getfd", "kcmp", "name_to_handle_at", "open_by_handle_at", "reboot",
    "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie", "iopl", "ioperm",
    "modify_ldt", "uselib", "vhangup", "fanotify_init", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "move_pages", "migrate_pages", "_sysctl", "nfsservctl",
    # System V IPC and POSIX message queues: named objects that outlive the test and, under Landlock
    # (no IPC namespace), are the host's (Python's multiprocessing uses neither)
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop",
    "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
    "mq_getsetattr",
)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
# Landlock does not cover a file's metadata: without a mount namespace the owner of a host file
# could still chmod, touch or tag it, so at that level these calls are denied outright.
METADATA_CALLS = ("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat", "lchown", "utime",
                  "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
                  "lremovexattr", "fremovexattr", "setxattrat", "removexattrat")
AF_INET, AF_INET6, AF_MAX = 2, 10, 64
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
INT32 = 0xFFFFFFFF


class SeccompUnavailable(RuntimeError):
    pass


@functools.lru_cache(maxsize=8)
def compiled_filter(network: bool, signal_gap: bool = False, metadata: bool = False) -> bytes:
    """BPF bytes of the filter. ``network``: AF_INET/AF_INET6 sockets allowed (bubblewrap's empty
    network namespace); ``signal_gap``: Landlock cannot scope signals here (ABI < 6), so kill()
    of a process group or of every process (negative pid) is denied too; ``metadata``: the
    METADATA_CALLS are denied (the Landlock level, where host files are not behind a mount)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as error:
        raise SeccompUnavailable(f"libseccomp is not usable ({error}); install libseccomp2 and pyseccomp") from None
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    try:  # a binary tree of system call numbers: every allowed call (most of them) pays a few jumps
        rules.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (OSError, ValueError, AttributeError):
        pass
    for name in DENIED_CALLS + (METADATA_CALLS if metadata else ()):
        _add(seccomp, rules, deny, name)
    for flag in NAMESPACE_FLAGS:
        _add(seccomp, rules, deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    _add(seccomp, rules, seccomp.ERRNO(errno.ENOSYS), "clone3")
    for family in range(AF_MAX):  # the kernel reads the family as a 32-bit int: compare only those bits
        if not (network and family in (AF_INET, AF_INET6)):
            _add(seccomp, rules, seccomp.ERRNO(errno.EAFNOSUPPORT if family != 1 else errno.EPERM), "socket",
                 seccomp.Arg(0, seccomp.MASKED_EQ, INT32, family))
    for request in (TIOCSTI, TIOCLINUX):
        _add(seccomp, rules, deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, INT32, request))
    if signal_gap:
        for call in ("kill", "tgkill"):
            _add(seccomp, rules, deny, call, seccomp.Arg(0, seccomp.MASKED_EQ, 0x80000000, 0x80000000))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def _add(seccomp, rules, action, name, *args) -> None:
    try:
        rules.add_rule(action, name, *args)
    except (OSError, ValueError, RuntimeError):
        pass  # a call this architecture does not have


def available() -> str:
    """"" when the filter can be built here, else why not."""
    try:
        compiled_filter(True)
    except SeccompUnavailable as error:
        return str(error)
    except OSError as error:
        return f"libseccomp failed: {os.strerror(error.errno or 0)}"
    return ""
