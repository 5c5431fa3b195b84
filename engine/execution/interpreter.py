"""Which Python runs the project's tests, and what the sandbox must show of it.

egcfg itself (torch, the model) stays in its own environment; the tests run with the project's
interpreter and packages, chosen in this order: the editor's selected interpreter or a `python`
setting / `--python` flag (both arrive here as `python`), a `.venv` or `venv` at the workspace
root, else the interpreter running egcfg. The choice is probed once (a short stdlib script run in
that interpreter) and cached per executable, modification time and sandbox level.

A project's interpreter is untrusted: a `.venv/bin/python` may be a shell script, and a real venv
runs the import lines of its `.pth` files at startup (`-I` does not disable `site`). So it only
ever runs inside the sandbox the tests use (``run_confined``): at the bubblewrap level in bwrap
(every namespace unshared, no network, the declared system folders and the interpreter's own
folders read-only, a private /tmp, the seccomp filter), at the landlock level under a launcher
that applies Landlock (reads: the same folders; writes: a scratch folder; no TCP) and the seccomp
filter with no_new_privs to itself before it execs the interpreter. Only the explicit ``limits``
level, and egcfg's own interpreter, run it on the host. The folders shown (``launch_view``) are
found on the host from the executable's path, its symlinks and its pyvenv.cfg, never from what
the interpreter says; what the probe reports is only kept where it lies inside them (or the
project), and never the root folder, the user's home folder or one of its ancestors.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from engine.errors import UserError
from engine.project import outline

OLDEST = (3, 9)
PROBE_SECONDS = 20.0
# Run inside the chosen interpreter (any CPython 3.9+): where it lives and what it can import.
_PROBE = r"""
import json, os, sys, sysconfig
try:
    import site
    site_dirs = list(site.getsitepackages())
except Exception:
    site_dirs = []
paths = [p for p in sys.path if p]
try:
    from importlib import metadata
    pytest_version = metadata.version("pytest")
except Exception:
    pytest_version = ""
print(json.dumps({"version": list(sys.version_info[:3]), "implementation": sys.implementation.name,
                  "prefix": sys.prefix, "base_prefix": getattr(sys, "base_prefix", sys.prefix),
                  "exec_prefix": sys.exec_prefix, "executable": sys.executable,
                  "stdlib": sysconfig.get_paths().get("stdlib", ""), "site": site_dirs, "paths": paths,
                  "pytest": pytest_version}))
"""


# The probe and the outline helper run under these limits wherever they are sandboxed.
CONFINED_MEMORY = 2 << 30      # address space, bytes
CONFINED_FILE_SIZE = 16 << 20  # largest file written, bytes
CONFINED_OUTPUT = 4 << 20      # stdout kept; past it the process is killed
# Folders that are never shown whole, whatever an interpreter's path or pyvenv.cfg names.
PRIVATE_TOPS = ("/", "/home", "/root", "/run", "/var", "/etc", "/tmp", "/proc", "/sys", "/dev", "/mnt", "/media",
                "/srv", "/opt")


@dataclass(frozen=True)
class Interpreter:
    executable: str                  # the path to run (a venv's bin/python, not the file it links to)
    version: tuple[int, ...]         # (3, 12, 1)
    prefix: str
    base_prefix: str
    paths: tuple[str, ...]           # its sys.path entries as it reported them (stdlib, site-packages, .pth additions)
    site: tuple[str, ...]            # its site-packages folders
    pytest: str                      # the pytest version it can import, "" when none
    source: str                      # why it was chosen: "setting" | ".venv" | "venv" | "egcfg"
    stdlib: str = ""
    view: tuple[str, ...] = ()       # its folders, found on the host (launch_view): what it was probed with
    root: str = ""                   # the workspace it was chosen for ("" when none)
    trusted: bool = False            # egcfg's own interpreter: what it reports is believed

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def is_own(self) -> bool:
        """Whether this is the interpreter running egcfg (then nothing more needs mounting)."""
        return os.path.realpath(self.executable) == os.path.realpath(sys.executable) and self.prefix == sys.prefix

    def describe(self) -> str:
        why = {"setting": "the python setting", ".venv": "the workspace's .venv", "venv": "the workspace's venv",
               "egcfg": "egcfg's own; no project interpreter found"}.get(self.source, self.source)
        tests = f"pytest {self.pytest}" if self.pytest else "no pytest"
        return f"Python {self.version_text} at {self.executable} ({why}; {tests})"

    def read_only_binds(self) -> list[str]:
        """Folders the sandbox must show, read-only, for this interpreter to start and import its
        packages: the folders found on the host for its executable (``launch_view``: its folder,
        the folders its symlinks lead through, its prefix, the venv and the pyvenv.cfg home), and
        of what it reported (prefixes, site-packages, stdlib, sys.path) only the folders that lie
        inside those, inside the system folders or inside the workspace. A `.pth` line naming any
        other folder is not shown; the root folder, the user's home folder and its ancestors never."""
        from engine.execution import isolation

        anchors = [*self.view, *isolation.SYSTEM_DIRS, *([self.root] if self.root else [])]
        core = [self.prefix, self.base_prefix, *self.site, self.stdlib]
        if self.trusted:  # egcfg's own: its prefixes and site-packages are known good
            anchors += [*core, os.path.dirname(os.path.abspath(self.executable)),
                        os.path.dirname(os.path.realpath(self.executable))]
        anchors = [os.path.realpath(a) for a in anchors if a and not _private(a)]
        wanted = list(self.view) + (
            [os.path.dirname(os.path.abspath(self.executable)), os.path.dirname(os.path.realpath(self.executable))]
            if self.trusted else [])
        for path in (*core, *self.paths):
            if path and os.path.isabs(path) and os.path.exists(path) and inside(os.path.realpath(path), anchors):
                wanted.append(path)
        return outermost(p for p in wanted if not _private(p))

    def hidden_paths(self, shown=()) -> tuple[str, ...]:
        """Folders on its import path (a `.pth` line) that the sandbox does not show, outside
        ``shown`` (folders the user allowed): the tests cannot import from them."""
        shown_now = self.read_only_binds()
        binds = [*shown_now, *(os.path.realpath(p) for p in shown), *(os.path.realpath(d) for d in _system_dirs())]
        # what it reported, and (a probe in bwrap cannot see a folder the view lacks, so does not
        # report it) the path lines of the .pth files in its site-packages, read here as text
        candidates = [*self.paths, *_pth_folders(s for s in self.site if inside(os.path.realpath(s), shown_now))]
        return tuple(sorted({os.path.realpath(p) for p in candidates
                             if p and os.path.isabs(p) and os.path.isdir(p) and not inside(os.path.realpath(p), binds)}))

    def to_dict(self) -> dict:
        return {"executable": self.executable, "version": self.version_text, "source": self.source,
                "prefix": self.prefix, "pytest": self.pytest, "description": self.describe()}


def workspace_venv(workspace_root: str | None) -> tuple[str, str] | None:
    """(python path, ".venv"|"venv") of a virtual environment at the workspace root, if any."""
    if not workspace_root:
        return None
    for name in (".venv", "venv"):
        for binary in ("bin/python3", "bin/python", "Scripts/python.exe"):
            candidate = os.path.join(workspace_root, name, binary)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate, name
    return None


def select(workspace_root: str | None = None, python: str = "", sandbox: str = "auto") -> Interpreter:
    """The interpreter the project's tests run with (see the module's docstring for the order),
    probed in the sandbox of level ``sandbox`` (auto | bubblewrap | landlock | limits: the level
    the executor will use). Raises UserError, one sentence, when a named interpreter cannot be
    used or no sandbox can probe it."""
    python = (python or "").strip()
    if python:
        path = os.path.expanduser(python)
        if not os.path.isabs(path) and workspace_root and os.sep in path:
            path = os.path.join(workspace_root, path)
        if os.path.isdir(path):  # a venv folder given instead of its python
            found = workspace_venv(os.path.dirname(path.rstrip("/"))) if os.path.basename(path.rstrip("/")) in (".venv", "venv") else None
            path = found[0] if found else os.path.join(path, "bin", "python")
        if not os.path.isabs(path):
            path = shutil.which(path) or path
        return probe(os.path.abspath(path), "setting", sandbox, workspace_root)
    venv = workspace_venv(workspace_root)
    if venv is not None:
        return probe(os.path.abspath(venv[0]), venv[1], sandbox, workspace_root)
    return probe(sys.executable, "egcfg", sandbox, workspace_root)


def probe(executable: str, source: str, sandbox: str = "auto", root: str | None = None) -> Interpreter:
    try:
        stamp = os.stat(executable).st_mtime_ns
    except OSError:
        raise UserError(f"the Python interpreter {executable} does not exist") from None
    root = os.path.realpath(root) if root and os.path.isdir(root) else ""
    return _probe(executable, stamp, source, sandbox or "auto", root)


def is_trusted(executable: str) -> bool:
    """Only the very interpreter running egcfg (its path, not another link to the same file:
    a project's venv may link to the same base Python and still run its own `.pth` files)."""
    return os.path.abspath(executable) == os.path.abspath(sys.executable)


@lru_cache(maxsize=32)
def _probe(executable: str, stamp: int, source: str, sandbox: str = "auto", root: str = "") -> Interpreter:
    if not os.access(executable, os.X_OK):
        raise UserError(f"the Python interpreter {executable} is not executable")
    trusted = is_trusted(executable)
    view = launch_view(executable)
    try:
        done = run_confined([executable, "-I", "-c", _PROBE], view=view + ([root] if root and not _private(root) else []),
                            sandbox="limits" if trusted else sandbox, timeout=PROBE_SECONDS)
    except OSError as error:
        raise UserError(f"the Python interpreter {executable} could not be run: {error}") from None
    if done.timed_out:
        raise UserError(f"the Python interpreter {executable} did not answer within {PROBE_SECONDS:g} s")
    try:
        info = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        version = tuple(int(v) for v in info["version"])
        strings = {key: str(info.get(key) or "") for key in ("prefix", "base_prefix", "stdlib", "pytest", "implementation")}
        paths = tuple(str(p) for p in info.get("paths") or () if isinstance(p, str))
        site = tuple(str(p) for p in info.get("site") or () if isinstance(p, str))
    except (ValueError, IndexError, KeyError, TypeError, AttributeError):
        detail = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1][:200]
        raise UserError(f"{executable} is not a Python 3.9+ interpreter egcfg can use ({detail})") from None
    if strings["implementation"] != "cpython" or version[:2] < OLDEST:
        raise UserError(f"{executable} is {strings['implementation']} {'.'.join(map(str, version))}: "
                        f"tests need CPython {OLDEST[0]}.{OLDEST[1]} or newer")
    return Interpreter(executable=executable, version=version, prefix=strings["prefix"],
                       base_prefix=strings["base_prefix"], paths=paths, site=site, pytest=strings["pytest"],
                       source=source, stdlib=strings["stdlib"], view=tuple(view), root=root, trusted=trusted)


def own() -> Interpreter:
    """The interpreter running egcfg, probed like any other."""
    return probe(sys.executable, "egcfg")


# ---------------------------------------------------------------------------------------------
# What an interpreter needs to start, found on the host
# ---------------------------------------------------------------------------------------------


def _homes() -> set[str]:
    found = {os.path.expanduser("~"), os.environ.get("HOME", "")}
    try:
        found.add(pwd.getpwuid(os.getuid()).pw_dir)
    except (KeyError, OSError):
        pass
    return {os.path.realpath(h) for h in found if h}


def _private(path: str) -> bool:
    """The root folder, the user's home folder or an ancestor of it, or a top-level folder that
    holds other users' or the system's state: never shown whole."""
    path = os.path.realpath(path)
    if path in PRIVATE_TOPS:
        return True
    return any(home == path or home.startswith(path.rstrip("/") + "/") for home in _homes())


def _pth_folders(site_dirs) -> list[str]:
    """The folders the path lines of these site-packages' .pth files name (as site.addpackage reads them)."""
    found = []
    for site_dir in site_dirs:
        for pth in sorted(glob.glob(os.path.join(glob.escape(site_dir), "*.pth")))[:200]:
            try:
                with open(pth, encoding="utf-8", errors="replace") as handle:
                    lines = handle.read(65536).splitlines()
            except OSError:
                continue
            found += [os.path.join(site_dir, line.strip()) for line in lines
                      if line.strip() and not line.startswith(("#", "import ", "import\t"))]
    return found


def _system_dirs() -> tuple[str, ...]:
    from engine.execution import isolation

    return tuple(isolation.SYSTEM_DIRS)


def inside(path: str, folders) -> bool:
    """Whether path is one of the folders or lies below one."""
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def outermost(paths) -> list[str]:
    """The real paths that exist, shortest first, without any that lies inside another one."""
    kept: list[str] = []
    for path in sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)}, key=len):
        if not inside(path, kept):
            kept.append(path)
    return kept


def runnable_path(executable: str) -> str:
    """The executable's path with its folder resolved (so it exists inside bwrap, which shows
    folders at their real paths) but not the file itself (a venv's python must stay in the venv)."""
    executable = os.path.abspath(executable)
    return os.path.join(os.path.realpath(os.path.dirname(executable)), os.path.basename(executable))


def _link_chain(executable: str) -> list[str]:
    """The executable and every file its symlinks lead through, folders resolved."""
    chain, path = [], runnable_path(executable)
    for _ in range(40):
        chain.append(path)
        try:
            target = os.readlink(path) if os.path.islink(path) else None
        except OSError:
            target = None
        if target is None:
            break
        path = runnable_path(os.path.join(os.path.dirname(path), target))
    return chain


def _installation(bin_folder: str) -> str:
    """The prefix above a bin/ folder when it looks like a Python installation, else ""."""
    if os.path.basename(bin_folder.rstrip("/")) != "bin":
        return ""
    prefix = os.path.dirname(bin_folder.rstrip("/"))
    return prefix if glob.glob(os.path.join(glob.escape(prefix), "lib", "python3*")) else ""


def _venv_home(folder: str) -> str:
    """The `home` of a pyvenv.cfg in ``folder`` ("" when none)."""
    try:
        with open(os.path.join(folder, "pyvenv.cfg"), encoding="utf-8", errors="replace") as handle:
            for line in handle.read(65536).splitlines():
                key, sep, value = line.partition("=")
                if sep and key.strip().lower() == "home":
                    return value.strip()
    except OSError:
        pass
    return ""


def launch_view(executable: str) -> list[str]:
    """The folders, outside the system ones, that an interpreter needs to start, found on the host
    from its path alone: the folder of the executable and of every file its symlinks lead through,
    the installation prefix above such a bin/ folder, the venv (the folder of its pyvenv.cfg) and
    the pyvenv.cfg's `home` (when it holds a python) with its prefix. Never the root folder, the
    user's home folder or its ancestors (``_private``)."""
    found: list[str] = []
    chain = _link_chain(executable)
    for hop in chain:
        folder = os.path.dirname(hop)
        found += [folder, _installation(folder)]
    bin_folder = os.path.dirname(chain[0])
    for venv in (os.path.dirname(bin_folder), bin_folder):
        home = _venv_home(venv)
        if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
            continue
        found.append(venv)
        if home and os.path.isabs(home) and glob.glob(os.path.join(glob.escape(home), "python3*")):
            found += [home, _installation(os.path.realpath(home))]
        break
    return outermost(p for p in found if p and not _private(p))


# ---------------------------------------------------------------------------------------------
# Running an untrusted interpreter in the sandbox
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Confined:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    level: str  # the sandbox it ran in: bubblewrap | landlock | limits


# Run by egcfg's own Python (-I -S): rlimits; at the landlock level then no_new_privs and Landlock,
# no capabilities and the seccomp filter (the sandbox package's own code: landlock.py, confine.py,
# as the tests' worker and T apply them); then it execs the command (bwrap, or the interpreter).
_LAUNCHER = r"""
import importlib.util, json, os, resource, sys
config = json.loads(sys.argv[1])
for name, value in config["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if config.get("landlock"):
    folder = config["sandbox"]
    spec = importlib.util.spec_from_file_location("_egcfg_sandbox", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    package = importlib.util.module_from_spec(spec)
    sys.modules["_egcfg_sandbox"] = package
    spec.loader.exec_module(package)
    from _egcfg_sandbox import confine, landlock
    rules = config["landlock"]
    landlock.restrict(int(rules["abi"]), rules["read"], rules["write"], rules["devices"], deny_tcp=True, scope=True)
    if config.get("seccomp") and config.get("keep_capabilities"):
        confine.load_seccomp(bytes.fromhex(config["seccomp"]))  # the tests' worker: it may still drop to nobody
    elif config.get("seccomp"):
        prepared = confine.Prepared({"seccomp_bpf": config["seccomp"]})  # kept alive: the kernel copies it at load
        confine.confine(prepared)  # no capabilities (no_new_privs is set), then the seccomp filter
os.execv(sys.argv[2], sys.argv[2:])
"""


def landlock_launcher(rules: dict, seccomp: bytes = b"", rlimits: dict | None = None,
                      keep_capabilities: bool = False) -> list[str]:
    """The argv prefix that starts a command under Landlock ``rules`` (isolation.landlock_rules),
    with no_new_privs, the ``rlimits`` ({"RLIMIT_CPU": n, ...}) and, when given, no capabilities
    and the ``seccomp`` filter, all applied before the command's first instruction. The launcher
    is egcfg's own Python with -I -S; the command is exec'd, so it keeps the same process.
    ``keep_capabilities``: load the filter without emptying the capability sets (the tests'
    worker, which as root still makes each test nobody)."""
    from engine.execution import isolation

    config = {"rlimits": dict(rlimits or {}), "sandbox": isolation.SANDBOX_DIR, "landlock": rules, "seccomp": seccomp.hex(),
              "keep_capabilities": keep_capabilities}
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(config)]


def run_confined(argv: list[str], *, view: list[str], sandbox: str = "auto", stdin: bytes = b"",
                 timeout: float = PROBE_SECONDS) -> Confined:
    """Run ``argv`` (an untrusted program: argv[0] must lie in ``view``) with ``stdin``, in the
    sandbox of level ``sandbox`` as isolation.choose picks it, showing the system folders and
    ``view`` read-only: no network, no writes but a private scratch /tmp (removed afterwards),
    rlimits, a wall-clock ``timeout``; stdout and stderr captured. At the ``limits`` level it
    runs on the host as it is. UserError when no sandbox of that level is available here."""
    from engine.execution import isolation

    choice = isolation.choose(sandbox)
    done = _run_at(choice, argv, view, stdin, timeout)
    if (choice.level == "bubblewrap" and done.returncode == 1 and done.stderr.startswith(b"bwrap:")
            and isolation.requested_level(sandbox) == "auto"):
        try:  # bwrap passed its probe but cannot build this sandbox: Landlock, as the executor does
            fallback = isolation.choose("landlock")
        except UserError:
            return done
        done = _run_at(fallback, argv, view, stdin, timeout)
    return done


def _run_at(choice, argv: list[str], view: list[str], stdin: bytes, timeout: float) -> Confined:
    from engine.execution import isolation, seccomp_filter

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin") if choice.level == "limits" else "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    if choice.level == "limits":  # the explicit opt-in: no isolation, as before
        return _communicate(list(argv), env, None, (), stdin, timeout, choice.level)
    argv = [runnable_path(argv[0]), *argv[1:]]
    folder = os.path.dirname(argv[0])  # the file alone where its folder is a private one (a python in $HOME)
    view = outermost([*(p for p in view if not _private(p)), argv[0] if _private(folder) else folder])
    rlimits = {"RLIMIT_CPU": int(timeout) + 5, "RLIMIT_AS": CONFINED_MEMORY, "RLIMIT_FSIZE": CONFINED_FILE_SIZE,
               "RLIMIT_CORE": 0}
    scratch = tempfile.mkdtemp(prefix="egcfg-probe-")
    try:
        if choice.level == "bubblewrap":
            inner = {**env, "HOME": "/tmp", "TMPDIR": "/tmp"}
            command = [choice.bwrap, *isolation.bwrap_args(view, "/tmp"), "--clearenv", "--chdir", "/tmp"]
            for key, value in inner.items():
                command += ["--setenv", key, value]
            fds: tuple[int, ...] = ()
            try:  # the same filter as the tests' (bubblewrap level), loaded by bwrap before the exec
                bpf = seccomp_filter.compiled_filter(network=True)
            except (seccomp_filter.SeccompUnavailable, OSError):
                bpf = b""  # the namespaces still hold, as in the executor
            if bpf:
                read_end, write_end = os.pipe()
                os.write(write_end, bpf)  # a few KiB: fits the pipe's buffer
                os.close(write_end)
                fds = (read_end,)
                command += ["--seccomp", str(read_end)]
            launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps({"rlimits": rlimits})]
            try:
                return _communicate(launcher + [*command, "--", *argv], env, scratch, fds, stdin, timeout, choice.level)
            finally:
                for fd in fds:
                    os.close(fd)
        abi = choice.landlock_abi
        rules = {**isolation.landlock_rules(view, scratch, abi), "write": [scratch]}  # the scratch folder only
        launcher = landlock_launcher(rules,
                                     seccomp_filter.compiled_filter(network=False, signal_gap=abi < 6, metadata=True),
                                     rlimits)
        return _communicate(launcher + argv, {**env, "HOME": scratch, "TMPDIR": scratch}, scratch, (), stdin, timeout,
                            choice.level)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _communicate(argv, env, cwd, fds, stdin: bytes, timeout: float, level: str) -> Confined:
    """Run, feed stdin, keep at most CONFINED_OUTPUT bytes of each stream; kill the whole session
    at the deadline (or past the output cap)."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               cwd=cwd, pass_fds=fds, start_new_session=True)

    def feed():
        try:
            process.stdin.write(stdin)
        except OSError:
            pass
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()

    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    streams = {out_fd: bytearray(), err_fd: bytearray()}
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        open_fds = set(streams)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fd)
                    open_fds.discard(key.fd)
                    continue
                streams[key.fd] += chunk
            if any(len(data) > CONFINED_OUTPUT for data in streams.values()):
                break
    if open_fds:
        kill_session(process)
    try:
        process.wait(timeout=max(0.1, deadline - time.monotonic()) if not timed_out else 5)
    except subprocess.TimeoutExpired:
        kill_session(process)
        timed_out = True
        process.wait(timeout=5)
    kill_session(process)  # whatever of its session is left
    for stream in (process.stdout, process.stderr):
        stream.close()
    writer.join(timeout=1)
    return Confined(process.returncode, bytes(streams[out_fd][:CONFINED_OUTPUT]), bytes(streams[err_fd][:CONFINED_OUTPUT]),
                    timed_out, level)


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL to the process's session (started with start_new_session) and to the process."""
    try:
        os.killpg(process.pid, signal.SIGKILL)  # bwrap (and everything below it), or the interpreter's session
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.kill()
    except OSError:
        pass


def _run_outline_helper(python: str, arguments: list[str], stdin: bytes, timeout: float, sandbox: str) -> bytes | None:
    """outline.py's runner: the project's interpreter in the tests' sandbox (egcfg's own on the host)."""
    done = run_confined([python, *arguments], view=launch_view(python), stdin=stdin, timeout=timeout,
                        sandbox="limits" if is_trusted(python) else sandbox)
    return None if done.timed_out else done.stdout


outline.use_runner(_run_outline_helper)
