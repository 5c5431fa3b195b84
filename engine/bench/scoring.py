"""Honest scoring for `egcfg bench accuracy`.

The engine answers each task with ONE program (the first agent to pass the guidance tests, else its
best). That program alone is scored here, on the held-out evaluation tests and, when present, the
extended (ET) tests; nothing in the selection ever sees those tests. ET tests that the reference
solution itself fails are broken data: they are excluded from the score and listed in the report.

Everything here is plain logic over a `Solver` (Task, method -> Answer) and an executor, so it can be
tested with a stand-in solver, and the same per-task function runs in this process or in a Ray actor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

if TYPE_CHECKING:   # the engine modules are imported only where they are used (keeps imports cheap)
    from engine.bench.datasets import Task
    from engine.execution.executor import Executor

# The two answers compared for every task: plain greedy decoding without guidance (gamma = 0, one
# agent), and EG-CFG with the chosen preset and gammas.
METHODS = ("baseline", "egcfg")

MEANINGLESS_NOTE = ("the model has random weights: its accuracy is meaningless; this run only shows "
                    "that the benchmark plumbing works")


@dataclass
class Answer:
    """What a solver returned for one task and method."""
    code: str           # the complete program to score (imports, helpers, the function)
    agent: str          # which agent's answer was returned
    solved: bool        # the engine's own claim: the program passed every guidance test
    lines: int          # lines the model wrote
    tokens: int         # tokens the model wrote
    seconds: float      # time the engine spent on this answer
    status: str = "complete"   # the engine's status (complete, cancelled, ...); "timeout" when cut off


class Solver(Protocol):
    def solve(self, task: "Task", method: str) -> Answer: ...


@dataclass(frozen=True)
class BrokenTest:
    """An ET test the reference solution does not pass (syntax error, wrong expectation, too slow)."""
    index: int          # position in task.et_tests
    test: str
    reason: str


def find_broken_tests(task: "Task", executor: "Executor") -> list[BrokenTest]:
    """Run the reference solution against the task's ET tests once; the ones it fails are broken."""
    if not task.et_tests:
        return []
    result = _run(executor, task.reference, task.et_tests, task.setup)
    return [BrokenTest(index, test, _reason(outcome))
            for index, (test, outcome) in enumerate(zip(task.et_tests, result))
            if outcome.outcome != "pass"]


def score_answer(task: "Task", answer: Answer, executor: "Executor",
                 broken: Iterable[int] = ()) -> dict[str, Any]:
    """Run the answer once against the guidance, evaluation and valid ET tests; count passes."""
    broken = set(broken)
    valid_et = [test for index, test in enumerate(task.et_tests) if index not in broken]
    # MBPP's guidance and evaluation tests are the same asserts (and ET starts with them): run each
    # distinct test once.
    unique = list(dict.fromkeys([*task.tests, *task.eval_tests, *valid_et]))
    outcomes = _run(executor, answer.code, unique, task.setup) if unique else []
    passed = {test for test, outcome in zip(unique, outcomes) if outcome.outcome == "pass"}

    def count(tests: Sequence[str]) -> list[int]:
        return [sum(test in passed for test in tests), len(tests)]

    guidance, evaluation = count(task.tests), count(task.eval_tests)
    et = count(valid_et) if valid_et else None
    return {
        **asdict(answer),
        "guidance": guidance,
        "eval": evaluation,
        "et": et,
        "pass": evaluation[1] > 0 and evaluation[0] == evaluation[1],
        "et_pass": None if et is None else et[0] == et[1],
    }


def evaluate_task(task: "Task", solver: Solver, executor: "Executor", *,
                  info: dict[str, Any] | None = None, methods: Sequence[str] = METHODS) -> dict[str, Any]:
    """One line of results.jsonl: the broken ET tests, then each method's answer and its scores.
    `info` describes the worker (device, model, parameters, random_weights) and is kept per task, so
    a summary can be rebuilt from the results file alone (after a resume, or from Ray actors)."""
    broken = find_broken_tests(task, executor)
    record: dict[str, Any] = {
        "task_id": task.task_id,
        **(info or {}),
        "et_total": len(task.et_tests),
        "et_broken": [asdict(test) for test in broken],
    }
    for method in methods:
        answer = solver.solve(task, method)
        record[method] = score_answer(task, answer, executor, (test.index for test in broken))
    return record


class TaskEvaluator:
    """A solver and an executor: what one worker (this process or a Ray actor) needs per task."""

    def __init__(self, solver: Solver, executor: "Executor", info: dict[str, Any] | None = None,
                 close=None):
        self.solver, self.executor, self.info = solver, executor, dict(info or {})
        self._close = close

    def evaluate(self, task: "Task") -> dict[str, Any]:
        return evaluate_task(task, self.solver, self.executor, info=self.info)

    def close(self) -> None:
        if self._close is not None:
            self._close()


# --- the summary --------------------------------------------------------------------------------

def percent(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else round(100.0 * numerator / denominator, 2)


def summarize_method(records: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    entries = [record[method] for record in records if method in record]
    with_et = [entry for entry in entries if entry["et"] is not None]
    passed = sum(entry["pass"] for entry in entries)
    et_passed = sum(bool(entry["et_pass"]) for entry in with_et)
    claimed = sum(entry["solved"] for entry in entries)
    seconds = sum(entry["seconds"] for entry in entries)
    return {
        "tasks": len(entries),
        "passed": passed,
        "pass_at_1": percent(passed, len(entries)),
        "et_tasks": len(with_et),
        "et_passed": et_passed,
        "et_pass_at_1": percent(et_passed, len(with_et)),
        # How often the public tests were passed but the held-out ones were not: the gap an
        # oracle selection would hide.
        "guidance_solved": claimed,
        "guidance_solved_eval_failed": sum(entry["solved"] and not entry["pass"] for entry in entries),
        "seconds": round(seconds, 3),
        "seconds_per_task": round(seconds / len(entries), 3) if entries else None,
        "tokens": sum(entry["tokens"] for entry in entries),
        "agents": dict(sorted(Counter(entry["agent"] for entry in entries).items())),
        "statuses": dict(sorted(Counter(entry["status"] for entry in entries).items())),
    }


def summarize(records: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """The run's summary: per method pass@1 on the evaluation and ET tests, and the broken ET tests."""
    random_weights = any(record.get("random_weights") for record in records)
    broken = [{"task_id": record["task_id"], **test} for record in records for test in record["et_broken"]]
    # A task whose ET tests are all broken has nothing left to score on ET.
    et_excluded = [record["task_id"] for record in records
                   if record["et_total"] and len(record["et_broken"]) == record["et_total"]]
    devices = sorted({record.get("device") or "unknown" for record in records})
    models = sorted({record["model_loaded"] for record in records if record.get("model_loaded")})
    summary = {
        **config,
        "device": ", ".join(devices) if devices else "unknown",
        "model_loaded": ", ".join(models),
        "tasks": len(records),
        "selection": ("the one program the engine returned: the first agent to pass the guidance "
                      "tests, else its best; evaluation and ET tests were never used to select"),
        "random_weights": random_weights,
        "methods": {method: summarize_method(records, method) for method in METHODS},
        "et_broken_tests": broken,
        "et_excluded_tasks": et_excluded,
    }
    if random_weights:
        summary["note"] = MEANINGLESS_NOTE
    return summary


def _cell(value: Any, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value}{suffix}"


def summary_markdown(summary: dict[str, Any], records: Sequence[dict[str, Any]] = ()) -> str:
    """The report as a Markdown table, baseline next to EG-CFG; with `records`, a row per task."""
    base, guided = summary["methods"]["baseline"], summary["methods"]["egcfg"]
    gammas = summary.get("gammas")
    lines = [
        f"# Accuracy: {summary.get('benchmark', '?')}",
        "",
        f"- model: `{summary.get('model', '?')}`, device: {summary['device']}, "
        f"preset: {summary.get('preset', '?')}, gammas: {gammas if gammas else 'preset default'}",
        f"- tasks: {summary['tasks']}",
        f"- scored program: {summary['selection']}",
    ]
    if summary.get("note"):
        lines.append(f"- **note: {summary['note']}**")
    lines += [
        "",
        "| | baseline (gamma 0, greedy) | EG-CFG |",
        "|---|---|---|",
        f"| pass@1, base tests | {_cell(base['pass_at_1'], '%')} ({base['passed']}/{base['tasks']}) "
        f"| {_cell(guided['pass_at_1'], '%')} ({guided['passed']}/{guided['tasks']}) |",
        f"| pass@1, ET tests | {_cell(base['et_pass_at_1'], '%')} ({base['et_passed']}/{base['et_tasks']}) "
        f"| {_cell(guided['et_pass_at_1'], '%')} ({guided['et_passed']}/{guided['et_tasks']}) |",
        f"| passed guidance tests, failed evaluation | {base['guidance_solved_eval_failed']} "
        f"| {guided['guidance_solved_eval_failed']} |",
        f"| seconds / task | {_cell(base['seconds_per_task'])} | {_cell(guided['seconds_per_task'])} |",
        f"| tokens written | {base['tokens']} | {guided['tokens']} |",
        "",
        "Answering agents (EG-CFG): "
        + (", ".join(f"{agent} x{count}" for agent, count in guided["agents"].items()) or "none"),
    ]
    broken = summary["et_broken_tests"]
    if broken:
        lines += ["", f"## ET tests excluded because the reference solution fails them ({len(broken)})", "",
                  "| task | test # | reason | test |", "|---|---|---|---|"]
        for test in broken:
            lines.append(f"| {test['task_id']} | {test['index']} | {_md(test['reason'], 80)} "
                         f"| `{_md(test['test'], 100)}` |")
    if summary["et_excluded_tasks"]:
        lines += ["", "Tasks without any valid ET test (left out of the ET score): "
                  + ", ".join(str(task) for task in summary["et_excluded_tasks"])]
    if records:
        lines += ["", "## Per task", "",
                  "tests as passed/total: guidance (seen by the engine), eval (held out), ET (valid ones)", "",
                  "| task | baseline eval | baseline ET | EG-CFG agent | guidance | eval | ET | lines | tokens | seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for record in records:
            base, guided = record["baseline"], record["egcfg"]
            lines.append(f"| {record['task_id']} | {_ratio(base['eval'])} | {_ratio(base['et'])} "
                         f"| {_md(guided['agent'] or 'none', 40)} | {_ratio(guided['guidance'])} "
                         f"| {_ratio(guided['eval'])} | {_ratio(guided['et'])} | {guided['lines']} "
                         f"| {guided['tokens']} | {guided['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _ratio(counts: Sequence[int] | None) -> str:
    return "-" if counts is None else f"{counts[0]}/{counts[1]}"


def _md(text: str, limit: int) -> str:
    """One table cell: a single line, pipes escaped, cut to `limit` characters."""
    text = " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run(executor: "Executor", program: str, tests: Sequence[str], setup: str):
    from engine.execution.executor import Job

    return executor.run(Job(program=program, tests=tuple(tests), setup=setup, trace=False)).tests


def _reason(result) -> str:
    return f"{result.outcome}: {result.message}" if result.message else result.outcome
