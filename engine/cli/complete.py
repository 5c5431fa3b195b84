"""`egcfg complete FILE::FUNCTION`: write a function's body with execution-guided decoding.

The tests that guide it: the function's doctests, each --test, and the cases of each --tests file
that call the function (read by engine.project.testfile).

Lines are shown on stderr as the engine commits them (a live status line on a terminal); the
function and its test results end up on stdout, or one JSON object with --json."""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

from engine.errors import UserError
from engine.generation.models import DEFAULT_NF4_KERNEL, NF4_KERNELS
from engine.project.sources import read_source
from engine.project.locate import FunctionSite, check_rest_parses, find_function
from engine.project.testfile import TestCase, TestSuite, docstring_of, doctest_cases, module_names, tests_in_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="FILE::FUNCTION", help="the module and the function whose body to write")
    parser.add_argument("--tests", action="append", default=[], metavar="PATH",
                        help="a test file: its tests that call the function are used (repeatable)")
    parser.add_argument("--test", action="append", default=[], metavar="'assert ...'",
                        help="a test case (repeatable); the function's doctests are always used too")
    parser.add_argument("--read-folder", action="append", default=[], metavar="FOLDER",
                        help="a host folder outside the project the tests may read (repeatable): "
                             "e.g. a sibling project installed in editable mode")
    parser.add_argument("--sandbox", choices=("auto", "bubblewrap", "landlock", "limits"), default="auto",
                        help="isolation of the tests (default auto: bubblewrap, else Landlock, else refuse; "
                             "limits = none, an explicit opt-in; EGCFG_SANDBOX sets the default)")
    parser.add_argument("--model", default=None, help="hub id or local folder (default: %(default)s = the built-in default model)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--preset", default="editor", choices=["editor", "paper"], help="agent grid")
    parser.add_argument("--gamma", action="append", type=float, default=None, metavar="G", help="guidance strength (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="token cap for the function body")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="per-test limit in the sandbox")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--compile", action="store_true",
                        help="one-token steps through torch.compile'd functions (CUDA graphs on a GPU; 4-bit models "
                             "compile on a GPU with bitsandbytes 0.50+, elsewhere they stay eager)")
    parser.add_argument("--nf4-kernel", default=DEFAULT_NF4_KERNEL, choices=NF4_KERNELS,
                        help="4-bit on a GPU: who multiplies 1-4 rows, egcfg's kernel, bitsandbytes', or auto "
                             "(the faster per weight shape, timed at load) (default: %(default)s)")
    parser.add_argument("--python", metavar="PATH", default="",
                        help="the project's interpreter for the tests (default: a .venv/venv at the project root, else egcfg's)")


def collect_tests(args: argparse.Namespace, site: FunctionSite, path: Path) -> TestSuite:
    """The function's doctests, then each --test, then the cases of each --tests file that call it."""
    function = site.name
    suite = TestSuite(function)
    docstring, docstring_line = docstring_of(site)
    if docstring:
        cases, skipped = doctest_cases(docstring, str(path), docstring_line, function)
        suite.cases += cases
        suite.skipped += skipped
    suite.cases += [_command_line_test(text, number) for number, text in enumerate(args.test, 1)]
    modules = module_names(str(path))
    for name in args.tests:
        tests_path = Path(name)
        found = tests_in_file(read_source(tests_path), str(tests_path), function, modules)
        if not found.cases:
            raise UserError(f"{tests_path} has no tests that call {function}{_because(found.skipped)}")
        suite.files.append(str(tests_path))
        suite.include(found)
    if not suite.cases:
        raise UserError("no tests given: pass --test 'assert ...' or --tests FILE, or write >>> examples in the "
                        f"docstring (the tests are what guides the model){_because(suite.skipped)}")
    return suite


def _because(reasons: list[str]) -> str:
    return f" ({'; '.join(reasons)})" if reasons else ""


def _command_line_test(text: str, number: int) -> TestCase:
    """A --test: an assert statement, or a block of statements; it must at least parse."""
    text = text.strip()
    if not text:
        raise UserError(f"--test number {number} is empty")
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise UserError(f"--test number {number} does not parse: {error.msg}") from None
    kind = "assert" if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert) else "block"
    return TestCase(text, f"--test {number}", "<command line>", 1, kind)


def _check_setup(executor, program: str, suite: TestSuite, project: dict | None = None) -> None:
    """Tests that cannot even import make every candidate fail: say so before loading a model."""
    from engine.execution.executor import Job

    if not suite.setup.strip():
        return
    result = executor.run(Job(program=program, tests=("pass",), setup=suite.setup, trace=False, project=project))
    outcome = result.tests[0]
    if outcome.outcome != "pass":
        raise UserError(f"the tests' imports fail before any code runs: {outcome.message}")


class LiveView:
    """Committed lines on stderr; on a terminal, one status line that is redrawn in place."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()

    def status(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[2K" + text[:120])
            self.stream.flush()

    def line(self, agent: str, number: int, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[2K")
        self.stream.write(f"[{agent} {number:>3}] {printable(text)}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\033[2K")
            self.stream.flush()


def printable(text: str) -> str:
    """Model output as it may be shown on a terminal: control characters (a carriage return, an
    escape sequence) written as escapes, so a generated line can neither redraw nor restyle it."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _function_text(program: str, function: str) -> str:
    """The completed function alone, out of the whole program the engine returns."""
    try:
        site = find_function(program, name=function)
    except UserError:
        return program
    lines = program.splitlines(keepends=True)
    return "".join(lines[site.def_line : site.end_line])


def main(args: argparse.Namespace) -> int:
    from engine.generation.agents import run_completion
    from engine.generation.events import AgentFinished, CandidatesRun, CompletionTask, Finished, LineCommitted
    from engine.execution.executor import Executor, Limits
    from engine.generation.models import DEFAULT_MODEL, describe, load_model

    started = time.monotonic()
    file_name, sep, function = args.target.rpartition("::")
    if not sep or not file_name or not function:
        raise UserError(f"expected FILE::FUNCTION, got {args.target!r}")
    path = Path(file_name)
    site = find_function(read_source(path), name=function)
    check_rest_parses(site, str(path))
    suite = collect_tests(args, site, path)
    for reason in suite.skipped:
        print(f"egcfg: skipped: {reason}", file=sys.stderr)
    from engine.execution import interpreter
    from engine.project.layout import module_layout

    view = LiveView()
    layout = module_layout(str(path), None)  # candidates run as the module of its package
    executor = Executor(limits=Limits(test_seconds=args.timeout), project_root=layout.rootdir, isolation=args.sandbox,
                        python=interpreter.select(layout.rootdir, args.python, args.sandbox),
                        readonly_binds=args.read_folder)
    try:
        _check_setup(executor, site.source_before + site.body_indent + "pass\n" + site.source_after, suite, layout.to_dict())
        view.status(f"loading {args.model or DEFAULT_MODEL} ...")
        model = load_model(args.model or DEFAULT_MODEL, device=args.device, nf4_kernel=args.nf4_kernel)
        view.status(f"model ready: {describe(model)}")
        task = CompletionTask(
            function_name=function,
            source_before=site.source_before,
            source_after=site.source_after,
            tests=[case.source for case in suite.cases],
            test_names=[case.test for case in suite.cases],
            setup=suite.setup,
            project=layout.to_dict(),
        )
        final = None
        for event in run_completion(model, executor, task, preset=args.preset, gammas=args.gamma, max_new_tokens=args.max_new_tokens,
                                    compile=args.compile):
            if isinstance(event, CandidatesRun):
                view.status(f"{event.agent}: line {event.line_no}: ran {len(event.candidates)} candidate(s)")
            elif isinstance(event, LineCommitted):
                view.line(event.agent, event.line_no, event.text)
            elif isinstance(event, AgentFinished):
                view.status(f"{event.agent} finished: {event.passed}/{event.total} tests pass ({event.reason})")
            elif isinstance(event, Finished):
                final = event
        view.done()
    finally:
        executor.close()
    if final is None:
        raise UserError("the engine stopped without an answer")
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps({
            "code": _function_text(final.code, function), "program": final.code, "body": final.body, "passed": final.passed, "total": final.total, "agent": final.agent,
            "solved": final.solved, "status": final.status, "seconds": round(seconds, 3),
            "model": describe(model), "function": function, "file": str(path),
        }))
    else:
        print(_function_text(final.code, function).rstrip("\n"))
        print(f"\n# {final.passed}/{final.total} tests pass; agent {final.agent}; {seconds:.1f} s; {final.status}")
    return 0
