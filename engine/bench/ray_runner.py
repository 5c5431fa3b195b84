"""Running benchmark tasks on a Ray cluster (`egcfg bench accuracy --ray [ADDRESS]`).

Ray does the scheduling: one actor per GPU (num_gpus=1) holds the model; on a machine without GPUs
there is one actor per requested worker (num_cpus=1). Tasks go to whichever actor is free
(ray.util.ActorPool) and each result comes back to the caller as soon as it is done, so the caller
can append it to the results file. The actor builds its evaluator from a plain-data worker spec
(bench_accuracy.EngineWorker), the same callable the in-process path uses, so both paths produce
the same per-task records.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from engine.errors import UserError

DEFAULT_CPU_WORKERS = 2
LOCAL = "local"


class TaskActor:
    """Holds one evaluator (model + executor) for the actor's lifetime."""

    def __init__(self, worker: Callable[[], Any]):
        self.evaluator = worker()

    def info(self) -> dict[str, Any]:
        return dict(getattr(self.evaluator, "info", {}))

    def evaluate(self, task) -> dict[str, Any]:
        return self.evaluator.evaluate(task)

    def close(self) -> None:
        self.evaluator.close()


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the ray package: pip install 'egcfg[ray]' (or pip install ray)") from None
    return ray


def connect(ray, address: str | None, workers: int | None) -> bool:
    """Join the cluster at `address`, or start a local instance; True when this call started Ray."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "configure_logging": False}
    try:
        if not address or address == LOCAL:
            ray.init(num_cpus=workers or DEFAULT_CPU_WORKERS, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "a local Ray instance" if not address or address == LOCAL else f"the Ray cluster at {address}"
        raise UserError(f"cannot start or join {where}: {_first_line(error)}") from None
    return True


def actor_options(ray, workers: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors to start and what each reserves: a GPU each when the cluster has GPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return workers or gpus, {"num_gpus": 1}
    cpus = int(resources.get("CPU", 0))
    count = workers or min(DEFAULT_CPU_WORKERS, max(cpus, 1))
    if count > cpus:
        raise UserError(f"--workers {count} asks for more CPU actors than the Ray cluster has CPUs ({cpus})")
    return count, {"num_cpus": 1}


def run_on_ray(tasks: Sequence, worker: Callable[[], Any], on_record: Callable[[dict], None], *,
               address: str | None = LOCAL, workers: int | None = None) -> None:
    """Evaluate `tasks` on Ray actors built by `worker`; `on_record` gets each record as it completes."""
    ray = import_ray()
    from ray.util import ActorPool

    started_here = connect(ray, address, workers)
    actors = []
    try:
        count, options = actor_options(ray, workers)
        count = min(count, len(tasks)) or 1
        remote_actor = ray.remote(TaskActor).options(**options)
        actors = [remote_actor.remote(worker) for _ in range(count)]
        _wait_ready(ray, actors)
        pool = ActorPool(actors)
        # A task that fails inside an actor is a bug, not bad input: its error propagates as is.
        for record in pool.map_unordered(lambda actor, task: actor.evaluate.remote(task), list(tasks)):
            on_record(record)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def _wait_ready(ray, actors: list) -> None:
    """Load the model in every actor before handing out tasks, so a bad --model fails at once."""
    try:
        ray.get([actor.info.remote() for actor in actors])
    except ray.exceptions.RayError as error:
        message = _user_message(error)
        if message is None:
            raise
        raise UserError(message) from None


def _user_message(error: Exception) -> str | None:
    """The sentence of the UserError raised inside an actor, if that is what failed."""
    text = str(error)
    marker = "UserError: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].strip().splitlines()[0]


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
