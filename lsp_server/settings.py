"""The server's settings: one typed model, parsed once from the client's JSON with defaults.

Clients send settings as `initializationOptions` and in `workspace/didChangeConfiguration`, either
flat or nested under an "egcfg" key, with camelCase keys (VS Code style) or snake_case. An invalid
value is reported (the caller shows it with window/showMessage) and the default is used instead:
a typo in a settings file must never stop the server.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from engine.generation.models import DEFAULT_NF4_KERNEL, NF4_KERNELS

DEFAULT_MODEL = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("auto", "4bit", "none")
PRESETS = ("editor", "baseline", "paper")
TRIGGERS = ("automatic", "manual")
VALUE_DIAGNOSTICS = ("off", "hint", "information")
SANDBOXES = ("auto", "bubblewrap", "landlock", "limits")  # engine/execution/isolation.py


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL                # hub name or local folder
    device: str = "auto"                      # auto | cpu | cuda
    quantization: str = "auto"                # auto (4-bit on CUDA) | 4bit | none
    preset: str = "editor"                    # the engine's agent grid
    gammas: tuple[float, ...] | None = None   # guidance strengths; None: the preset's
    test_seconds: float = 5.0                 # sandbox wall clock per test
    memory_mb: int = 1024                     # sandbox address space per test
    test_patterns: tuple[str, ...] = ()       # extra globs (relative to the workspace root) for test files
    trigger: str = "automatic"                # automatic: inline completion while typing; manual: on request only
    value_diagnostics: str = "hint"           # off | hint | information: the per-line value diagnostics' severity
    value_hints: bool = True                  # the values of each line as inlay hints at its end
    debounce_ms: int = 300                    # wait after the last keystroke before an automatic completion/test run
    max_new_tokens: int = 512                 # token cap per agent for one body
    max_file_bytes: int = 2_000_000           # larger documents are not analysed (a clear status instead)
    compile: bool = False                     # the engine's compiled guided step (torch.compile; worth it on a GPU)
    nf4_kernel: str = DEFAULT_NF4_KERNEL     # 4-bit on CUDA, 1-4 rows: bitsandbytes | egcfg (our Triton kernel) | auto (timed per shape)
    python: str = ""                          # the project's interpreter (VS Code: the Python extension's); "": .venv/venv, else egcfg's
    sandbox: str = "auto"                     # auto | bubblewrap | landlock | limits (limits: no isolation, explicit opt-in)
    read_folders: tuple[str, ...] = ()        # host folders outside the workspace the tests may read (a sibling's editable install)

    def engine_key(self) -> tuple:
        """The settings that need the model reloaded when they change."""
        return (self.model, self.device, self.quantization, self.nf4_kernel)

    def sandbox_key(self) -> tuple:
        """The settings that need a new executor when they change."""
        return (self.test_seconds, self.memory_mb, self.python, self.sandbox, self.read_folders)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


# Aliases clients may use for a field (besides its camelCase form).
ALIASES = {"test_timeout": "test_seconds", "memory": "memory_mb", "trigger_mode": "trigger", "debounce": "debounce_ms"}


def _choice(options: tuple[str, ...]):
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.lower()
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _number(low: float, high: float, kind=float):
    def check(value: Any):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number between {low:g} and {high:g}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        if kind is int and value != int(value):
            raise ValueError("must be a whole number")
        return kind(value)
    return check


def _gammas(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
        isinstance(g, (int, float)) and not isinstance(g, bool) and 0 <= g <= 20 for g in value
    ):
        raise ValueError("must be a non-empty list of numbers between 0 and 20")
    return tuple(float(g) for g in value)


def _patterns(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValueError("must be a list of glob patterns")
    return tuple(p.strip() for p in value)


def _folders(value: Any) -> tuple[str, ...]:
    """Existing absolute folders, none that would show the tests the whole system or home folder."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValueError("must be a list of folders")
    folders = tuple(os.path.expanduser(p.strip()) for p in value)
    for folder in folders:
        if not os.path.isabs(folder) or not os.path.isdir(folder):
            raise ValueError(f"{folder!r} is not an absolute path to a folder")
        real, home = os.path.realpath(folder), os.path.realpath(os.path.expanduser("~"))
        if real == "/" or home == real or home.startswith(real.rstrip("/") + "/"):
            raise ValueError(f"{folder!r} would show the tests the whole system or home folder")
    return folders


def _value_diagnostics(value: Any) -> str:
    if isinstance(value, bool):  # the older boolean form: true showed them, false hid them
        return "hint" if value else "off"
    return _choice(VALUE_DIAGNOSTICS)(value)


def _path(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be a path (a string)")
    return value.strip()


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


CHECKS = {
    "model": _text,
    "device": _choice(DEVICES),
    "quantization": _choice(QUANTIZATIONS),
    "preset": _choice(PRESETS),
    "gammas": _gammas,
    "test_seconds": _number(0.1, 600),
    "memory_mb": _number(64, 1 << 20, int),
    "test_patterns": _patterns,
    "trigger": _choice(TRIGGERS),
    "value_diagnostics": _value_diagnostics,
    "value_hints": _flag,
    "debounce_ms": _number(0, 10_000, int),
    "max_new_tokens": _number(1, 8192, int),
    "max_file_bytes": _number(1_000, 1 << 30, int),
    "compile": _flag,
    "nf4_kernel": _choice(NF4_KERNELS),
    "python": _path,
    "sandbox": _choice(SANDBOXES),
    "read_folders": _folders,
}
assert set(CHECKS) == {f.name for f in fields(Settings)}


def _section(raw: Any) -> dict:
    """The egcfg section of what the client sent (flat, or nested under "egcfg")."""
    if not isinstance(raw, dict):
        return {}
    nested = raw.get("egcfg")
    return nested if isinstance(nested, dict) else raw


def parse_settings(raw: Any, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """(settings, problems): `raw` applied over `base` (defaults when None).

    Each problem is one sentence naming the setting and why its value was not used; unknown keys
    are reported too, since they are usually typos."""
    settings = base or Settings()
    if raw is None:
        return settings, []
    if not isinstance(raw, dict):
        return settings, [f"egcfg settings must be an object, got {type(raw).__name__}; using the defaults"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    defaults = Settings()
    for key, value in _section(raw).items():
        name = ALIASES.get(_snake(key), _snake(key))
        if name not in CHECKS:
            problems.append(f"unknown egcfg setting {key!r} was ignored")
            continue
        try:
            changes[name] = CHECKS[name](value)
        except ValueError as error:
            default = getattr(defaults, name)
            problems.append(f"egcfg setting {key!r} {error} (got {value!r}); using the default {default!r}")
            changes[name] = default
    return replace(settings, **changes), problems


def describe(settings: Settings) -> dict:
    """The settings as camelCase JSON (for egcfg.status and the log)."""
    out = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        head, *rest = f.name.split("_")
        out[head + "".join(w.title() for w in rest)] = list(value) if isinstance(value, tuple) else value
    return out
