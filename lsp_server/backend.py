"""The engine as the server sees it: load a model, run tests traced in the sandbox, stream a completion.

Every engine import is lazy, so the server starts (and answers with a clear status) even when the
model or the sandbox cannot be set up. Tests of the server's own logic swap this class for a fake
with the same four methods; `EGCFG_LSP_BACKEND=module:callable` does the same for a server process.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from lsp_server.settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    name: str
    device: str
    quantized: bool
    description: str


class EngineBackend:
    """The real engine: one model, one executor (recreated when the sandbox limits change)."""

    def __init__(self) -> None:
        self._model = None
        self._executor = None
        self._executor_key: tuple | None = None
        self._lock = threading.Lock()

    # --- model ----------------------------------------------------------------------------------
    def load(self, settings: Settings) -> ModelInfo:
        """Blocking; raises engine.errors.UserError with one sentence when the model cannot load."""
        from engine.generation.models import describe, load_model

        self._model = None
        model = load_model(settings.model, device=settings.device, quantization=settings.quantization,
                           nf4_kernel=settings.nf4_kernel)
        self._model = model
        return ModelInfo(model.name, model.device, bool(model.quantized), describe(model))

    # --- sandbox --------------------------------------------------------------------------------
    def executor(self, settings: Settings, project_root: str | None):
        from engine.execution.executor import Executor, Limits

        from engine.execution import interpreter, project_run

        key = settings.sandbox_key() + (project_root,)
        with self._lock:
            if self._executor is None or self._executor_key != key:
                if self._executor is not None:
                    self._executor.close()
                    self._executor = None
                # The project's interpreter runs its tests: the python setting, a workspace .venv/venv, else egcfg's.
                python = interpreter.select(project_root, settings.python, settings.sandbox)
                limits = Limits(test_seconds=settings.test_seconds, memory_mb=settings.memory_mb,
                                job_seconds=max(60.0, settings.test_seconds * 4), max_processes=project_run.PROCESSES)
                self._executor = Executor(limits=limits, project_root=project_root, python=python,
                                          isolation=settings.sandbox, readonly_binds=settings.read_folders)
                self._executor.chosen_interpreter = python
                self._executor_key = key
            return self._executor

    def isolation(self, settings: Settings, project_root: str | None) -> str:
        """The sandbox level the tests run under (bubblewrap | landlock | limits)."""
        return self.executor(settings, project_root).isolation

    def interpreter(self, settings: Settings, project_root: str | None):
        """The interpreter the tests run with (engine.execution.interpreter.Interpreter)."""
        return self.executor(settings, project_root).chosen_interpreter

    def run_project(self, settings: Settings, project_root: str | None, path: str, text: str, files: Sequence[str],
                    nodeids: Sequence[str] = ()):
        """The module's tests as pytest runs them (engine.execution.project_run.ProjectRun), or None
        when the project's interpreter has no pytest (then run_tests does egcfg's own test reading).
        `nodeids`: only those tests (the ones an edit can change)."""
        from engine.execution import project_run

        executor = self.executor(settings, project_root)
        if not project_run.available(executor):
            return None
        return project_run.run_module(executor, path, text, project_root, files, nodeids=nodeids)

    def run_tests(self, settings: Settings, project_root: str | None, jobs: Sequence[tuple[str, Sequence[str], str]]) -> list:
        """[(program, tests, setup)] -> [JobResult], all traced, all tests in parallel."""
        from engine.execution.executor import Job

        executor = self.executor(settings, project_root)
        return executor.map([Job(program=p, tests=tuple(t), setup=s, trace=True) for p, t, s in jobs])

    # --- completion -----------------------------------------------------------------------------
    def complete(self, settings: Settings, project_root: str | None, task_fields: dict, cancel) -> Iterator[Any]:
        """The engine's event stream for one completion (see engine/generation/events.py)."""
        from engine.generation.agents import run_completion
        from engine.generation.events import CompletionTask

        if self._model is None:
            raise RuntimeError("the model is not loaded")
        task_fields = dict(task_fields)
        module_path = task_fields.pop("module_path", None)
        if module_path:  # candidates import like the real module: relative imports, __future__, its package
            from engine.project.layout import module_layout

            task_fields["project"] = module_layout(module_path, project_root).to_dict()
        task = CompletionTask(**task_fields)
        gammas = list(settings.gammas) if settings.gammas else None
        return run_completion(self._model, self.executor(settings, project_root), task,
                              preset=settings.preset, gammas=gammas, cancel=cancel,
                              max_new_tokens=settings.max_new_tokens, compile=settings.compile)

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.close()
                self._executor = None


def make_backend():
    """The backend named by EGCFG_LSP_BACKEND (module:callable, for tests), else the engine."""
    spec = os.environ.get("EGCFG_LSP_BACKEND", "").strip()
    if not spec:
        return EngineBackend()
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "Backend")()
