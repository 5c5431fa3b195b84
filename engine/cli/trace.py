"""`egcfg trace`: run tests against a program in the sandbox and print what happened, line by line.

The same traces the model reads during guided decoding, so this is also how a user sees what the
execution signal looks like for their code.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import warnings
from pathlib import Path

from engine.errors import UserError
from engine.project.sources import read_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code_file", metavar="CODE_FILE", help="the Python file whose code the tests call")
    parser.add_argument("--function", metavar="NAME", help="the function under test (must be defined in CODE_FILE); "
                        "with --tests-file, only the tests that mention it run")
    parser.add_argument("--test", action="append", default=[], metavar="'assert ...'",
                        help="a test: an assert statement or a block of statements (repeatable)")
    parser.add_argument("--tests-file", metavar="FILE",
                        help="a Python file: its top-level asserts are tests, and each test_* function is one test")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="wall-clock limit per test (default 5)")
    parser.add_argument("--no-trace", action="store_true", help="only outcomes, no trace")
    parser.add_argument("--pytest", action="store_true",
                        help="run the module's test files (--tests-file, else those found by name) and its doctests "
                             "with the project's own pytest, as pytest would")
    parser.add_argument("--python", metavar="PATH", default="",
                        help="the project's interpreter (default: a .venv/venv at the project root, else egcfg's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--read-folder", action="append", default=[], metavar="FOLDER",
                        help="a host folder outside the project the tests may read (repeatable): "
                             "e.g. a sibling project installed in editable mode")
    parser.add_argument("--sandbox", choices=("auto", "bubblewrap", "landlock", "limits"), default="auto",
                        help="isolation of the tests (default auto: bubblewrap, else Landlock, else refuse; "
                             "limits = none, an explicit opt-in; EGCFG_SANDBOX sets the default)")


def main(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UserError("--timeout must be a positive number of seconds")
    path = Path(args.code_file)
    program = read_source(path)
    if args.pytest:
        return _main_pytest(args, path, program)
    _check_compiles(program, str(path))
    if args.function and args.function not in defined_names(program):
        raise UserError(f"{path} defines no function or class named {args.function!r}")
    tests = [_checked_test(test, index) for index, test in enumerate(args.test, 1)]
    setup = ""
    if args.tests_file:
        tests_path = Path(args.tests_file)
        file_tests, setup = tests_from_file(read_source(tests_path), str(tests_path), path, args.function)
        if not file_tests and not tests:
            raise UserError(f"{tests_path} has no tests that can run here (asserts, test_* functions, unittest methods)")
        tests += file_tests
    if not tests:
        raise UserError("no tests given: add --test 'assert f(1) == 2' (repeatable) or --tests-file FILE")

    from engine.execution.executor import Executor, Job, Limits  # imported here: `egcfg --help` stays cheap

    from engine.project.layout import module_layout

    layout = module_layout(str(path), None)  # the program runs as the module of its package
    limits = Limits(test_seconds=args.timeout, job_seconds=args.timeout * len(tests) + 30)
    with Executor(workers=min(2, len(tests)), limits=limits, project_root=layout.rootdir,
                  python=_interpreter(args, layout.rootdir), isolation=args.sandbox,
                  readonly_binds=args.read_folder) as executor:
        result = executor.run(Job(program=program, tests=tuple(tests), setup=setup, trace=not args.no_trace,
                                  project=layout.to_dict()))
    print(json.dumps(as_json(program, result, path, args), indent=2) if args.json else as_text(program, result))
    return 0


def _interpreter(args: argparse.Namespace, root: str):
    from engine.execution import interpreter

    return interpreter.select(root, args.python, args.sandbox)


def _main_pytest(args: argparse.Namespace, path: Path, program: str) -> int:
    """--pytest: one sandboxed pytest session over the module's tests (engine/execution/project_run.py)."""
    from engine.execution import project_run
    from engine.execution.executor import Executor, Limits
    from engine.project.layout import find_rootdir
    from engine.execution.render import render_test

    root = find_rootdir(str(path.resolve().parent), None)
    python = _interpreter(args, root)
    if args.tests_file:
        files = [str(Path(args.tests_file).resolve())]
        if not Path(files[0]).is_file():
            raise UserError(f"{args.tests_file}: no such file")
    else:
        files = _test_files_by_name(path, root)
    limits = Limits(test_seconds=args.timeout, max_processes=project_run.PROCESSES)
    with Executor(workers=2, limits=limits, project_root=root, python=python, isolation=args.sandbox,
                  readonly_binds=args.read_folder) as executor:
        if not project_run.available(executor):
            raise UserError(f"{python.describe()} cannot import pytest: install it there, or drop --pytest")
        run = project_run.run_module(executor, str(path), program, root, files, trace=not args.no_trace)
    ran = run.ran
    if args.json:
        print(json.dumps({
            "file": str(path), "interpreter": python.describe(), "rootdir": run.layout.rootdir,
            "module": run.layout.name, "test_files": files, "traced": not args.no_trace,
            "passed": run.passed, "total": len(ran), "skipped": len(run.tests) - len(ran), "problems": run.problems,
            "tests": [{"test": t.nodeid, "outcome": t.outcome, "message": t.message, "seconds": round(t.seconds, 4),
                       "limit": t.limit, "trace": t.trace.to_dict() if t.trace is not None else None} for t in run.tests],
        }, indent=2))
        return 0
    from engine.execution.executor import TestResult

    blocks = [f"# {run.passed}/{len(ran)} tests passed, {len(run.tests) - len(ran)} skipped "
              f"({run.layout.name}; {python.describe()})"]
    blocks += [f"# {problem}" for problem in run.problems]
    for test in run.tests:
        result = TestResult(test.nodeid, test.outcome, test.message, test.trace, "", test.seconds)
        blocks.append(render_test(program, result))
    print("\n\n".join(blocks))
    return 0


def _test_files_by_name(path: Path, root: str) -> list[str]:
    """test_<module>.py / <module>_test.py beside the module or under a tests/ folder up to the root."""
    names = {f"test_{path.stem}.py", f"{path.stem}_test.py"}
    found: list[str] = []
    folder = path.resolve().parent
    top = Path(root).resolve()
    while True:
        for candidate in [folder / n for n in sorted(names)] + sorted(
                p for d in ("tests", "test") if (folder / d).is_dir() for p in (folder / d).rglob("*.py") if p.name in names):
            if candidate.is_file() and str(candidate) not in found:
                found.append(str(candidate))
        if folder == top or folder == folder.parent:
            break
        folder = folder.parent
    return found


def as_text(program: str, result) -> str:
    from engine.execution.render import render_test

    passed = sum(1 for test in result.tests if test.outcome == "pass")
    blocks = [f"# {passed}/{len(result.tests)} tests passed (isolation: {result.isolation})"]
    blocks += [render_test(program, test) for test in result.tests]
    return "\n\n".join(blocks)


def as_json(program: str, result, path: Path, args: argparse.Namespace) -> dict:
    from engine.execution.render import render_test

    return {
        "file": str(path),
        "function": args.function,
        "isolation": result.isolation,
        "traced": not args.no_trace,
        "passed": sum(1 for test in result.tests if test.outcome == "pass"),
        "total": len(result.tests),
        "tests": [
            {
                "test": test.test,
                "outcome": test.outcome,
                "message": test.message,
                "seconds": round(test.seconds, 4),
                "output": test.output,
                "trace_text": render_test(program, test),
                "trace": test.trace.to_dict() if test.trace is not None else None,
            }
            for test in result.tests
        ],
    }


# --------------------------------------------------------------------------- reading input


def _parse(source: str, filename: str) -> ast.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences are the program's business
        return ast.parse(source, filename)


def _check_compiles(source: str, label: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, label, "exec", dont_inherit=True)
    except SyntaxError as error:
        raise UserError(f"{label} does not compile: line {error.lineno}: {error.msg}") from None
    except ValueError as error:  # null bytes
        raise UserError(f"{label} does not compile: {error}") from None


def _checked_test(test: str, index: int) -> str:
    test = test.strip()
    if not test:
        raise UserError(f"--test number {index} is empty")
    _check_compiles(test, f"--test number {index}")
    return test


def defined_names(program: str) -> set[str]:
    """Top-level functions and classes, plus ``Class.method`` names."""
    names = set()
    for node in _parse(program, "<program>").body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def tests_from_file(source: str, label: str, code_path: Path, function: str | None = None) -> tuple[list[str], str]:
    """(tests, setup) from a tests file, read by the engine's one test-file parser: asserts, test
    functions (parametrized ones expanded), unittest methods; imports of the code file's own
    module are rebound to the program, which is already loaded."""
    from engine.project.testfile import module_names, tests_in_file

    found = tests_in_file(source, label, function.split(".")[-1] if function else None, module_names(str(code_path)))
    for reason in found.skipped:
        print(f"egcfg: skipping: {reason}", file=sys.stderr)
    if function and not found.cases:
        raise UserError(f"no test in {label} mentions {function}")
    return [case.source for case in found.cases], "\n".join(found.setup)
