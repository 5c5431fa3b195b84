"""Equality of values that cannot cross the sandbox (instances of the module's own classes: a
dataclass, a class with its own __eq__), decided inside it with Python's semantics, guarded.

The host compares whatever has a faithful plain encoding (engine/execution/verdict.py). When an
`assert A == B` (or `!=`) could not be judged because a side is such an object, the test runs
once more as a block in the sandbox that:
  - records, when the test starts (the module has loaded), every class among the module's globals
    and the `__eq__` it has then;
  - evaluates A, then B, as Python would;
  - requires both to be of exactly the same type, and that type to be one of those classes with the
    same `__eq__` as at the start (a test that swaps it, or a look-alike type, fails);
  - calls the `__eq__` (`__ne__`) that type had when the test started, explicitly: NotImplemented
    is a failure, never a fallback to the other side's method.
A plain expected value (`assert f() == 1`) fails the guards (its type is no class of the module), so
a refused actual value stays a failure and an object whose __eq__ always says True cannot pass. The result's message says the verdict
relied on the module's own __eq__.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from engine.execution import verdict

REFUSED = re.compile(r"^returned an? (?P<type>[\w.]+), which cannot be compared outside the sandbox$")
_SNAPSHOT = ("__egcfg_eq = {id(v): (v, v.__eq__, v.__ne__) "
             "for v in list(globals().values()) if isinstance(v, type)}")


def comparison(test: str) -> tuple[str, str, str] | None:
    """(left source, operator, right source) of a test that is exactly `assert LEFT == RIGHT` (or !=)."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert) or tree.body[0].msg is not None:
        return None
    node = tree.body[0].test
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq))):
        return None
    left, right = ast.get_source_segment(test, node.left), ast.get_source_segment(test, node.comparators[0])
    if left is None or right is None:
        return None
    return left, "==" if isinstance(node.ops[0], ast.Eq) else "!=", right


def block_for(test: str) -> str | None:
    """The guarded in-sandbox comparison for `test`, or None when it is not a plain comparison."""
    found = comparison(test)
    if found is None:
        return None
    left, op, right = found
    method = "__eq__" if op == "==" else "__ne__"
    slot = 1 if op == "==" else 2
    return "\n".join([
        _SNAPSHOT,
        f"__egcfg_a = ({left})",
        f"__egcfg_b = ({right})",
        "__egcfg_t = type(__egcfg_b)",
        "if type(__egcfg_a) is not __egcfg_t:",
        "    raise AssertionError('returned a %s, expected a %s' % (type(__egcfg_a).__name__, __egcfg_t.__name__))",
        "__egcfg_known = __egcfg_eq.get(id(__egcfg_t))",
        f"if __egcfg_known is None or __egcfg_known[0] is not __egcfg_t or __egcfg_t.{method} is not __egcfg_known[{slot}]:",
        "    raise AssertionError('the compared type or its comparison changed after the module loaded')",
        f"__egcfg_result = __egcfg_known[{slot}](__egcfg_b, __egcfg_a)  # the {method} it had when the module loaded",
        "if __egcfg_result is not True:",
        f"    raise AssertionError('returned %r, expected {op} %r' % (__egcfg_a, __egcfg_b))",
    ])


def retry_plan(result, plan: verdict.Plan) -> str | None:
    """The block to run for a test the host refused because both compared values were not plain."""
    if result.outcome != "fail" or plan.kind != "assert" or len(plan.leaves) != 2:
        return None
    if not REFUSED.match(result.message or ""):
        return None
    return block_for(plan.test)


def settle(executor, jobs, results):
    """Results with the tests that need it decided inside the sandbox (see the module's docstring)."""
    from engine.execution.executor import Job

    retries = []  # (job index, test index, block)
    for j, (job, result) in enumerate(zip(jobs, results)):
        if getattr(job, "project", None) and job.project.get("kind") == "pytest":
            continue
        for t, test_result in enumerate(result.tests):
            plan = verdict.plan_test(job.tests[t]) if t < len(job.tests) else None
            block = retry_plan(test_result, plan) if plan is not None else None
            if block is not None:
                retries.append((j, t, block))
    if not retries:
        return results
    blocks = [Job(program=jobs[j].program, tests=(block,), setup=jobs[j].setup, trace=jobs[j].trace,
                  project=jobs[j].project) for j, _, block in retries]
    for (j, t, _), again in zip(retries, executor.map_plain(blocks)):
        outcome = again.tests[0]
        before = results[j].tests[t]
        type_name = REFUSED.match(before.message).group("type")
        if outcome.outcome == "pass":
            message = f"compared inside the sandbox by {type_name}'s own comparison (the module's code)"
        elif outcome.outcome == "fail" and outcome.message.startswith("AssertionError: returned "):
            message = outcome.message[len("AssertionError: "):].split(" (test line ")[0]
        else:  # a guard refused it (another type, a swapped __eq__): the host's refusal stands
            continue
        results[j].tests[t] = replace(before, outcome=outcome.outcome, message=message,
                                      trace=before.trace or outcome.trace, output=before.output or outcome.output)
    return results
