"""Test cases for one function, read from text: a test file's, or the function's doctests.

From a test file, the cases that call the function: top-level asserts, asserts in pytest test
functions (parametrize cases substituted), unittest assertX calls turned into asserts, and, when a
test needs more than asserts, the whole test function as a block (given the few fixtures that need
no pytest). The file's other top-level statements (imports, helpers, constants) become setup code.

The executor runs the EDITED module as the program and each test in the program's namespace, so a
test's `from pkg.mathy import f` must bind the program's `f`, not the file on disk: imports of the
module under test are rewritten (dropped, or bound to a namespace over the program's globals).

Which files hold the tests is the caller's business (the language server's discovery, the CLI's
--tests); everything here is a pure function of texts and names.
"""

from __future__ import annotations

import ast
import copy
import doctest
import itertools
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from engine.errors import UserError
from engine.project.locate import FunctionSite

NAMESPACE = "__import__('types').SimpleNamespace(**globals())"  # the program's names as a module object
FIXTURES = {  # pytest fixtures a block test can be given without pytest
    "tmp_path": "__import__('pathlib').Path(__import__('tempfile').mkdtemp())",
    "tmpdir": "__import__('tempfile').mkdtemp()",
}


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class
    source: str   # an `assert ...` statement, or a block of statements (a test function + its call)
    label: str    # what the user calls it: "test_add[1-2-3]", "doctest 2", "test_mathy.py:14"
    path: str     # the file it came from
    line: int     # 1-based line there
    kind: str     # "assert" | "block"

    @property
    def test(self) -> str:
        return owning_test(self.label)


def owning_test(label: str) -> str:
    """The test a case belongs to: the asserts of one test function ("test_add #2") count as one."""
    return re.sub(r" #\d+$", "", label)


@dataclass
class FileTests:
    """What one test file holds for a function."""

    cases: list[TestCase] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)     # top-level statements the cases need, in order
    skipped: list[str] = field(default_factory=list)   # tests that cannot run here, and why


@dataclass
class TestSuite:
    __test__ = False
    function: str
    cases: list[TestCase] = field(default_factory=list)
    setup: str = ""                                         # imports + helpers of the test files
    files: list[str] = field(default_factory=list)          # test files that were read
    problems: list[str] = field(default_factory=list)       # e.g. a test file with a syntax error
    skipped: list[str] = field(default_factory=list)        # tests that cannot run here, and why

    def include(self, found: FileTests) -> None:
        """Add one file's cases; its setup only when it has cases (a piece already there is not repeated)."""
        self.cases += found.cases
        self.skipped += found.skipped
        if not found.cases:
            return
        for piece in found.setup:
            if f"\n{piece}\n" not in f"\n{self.setup}\n":
                self.setup = f"{self.setup}\n{piece}" if self.setup else piece

    @property
    def test_count(self) -> int:
        """Tests as the user counts them (a test function with two asserts is one)."""
        return len({case.test for case in self.cases})

    def why_no_tests(self) -> str:
        """One sentence for the status when there is nothing to guide with."""
        if self.cases:
            return ""
        detail = "; ".join(self.problems + self.skipped)
        where = f" in {', '.join(os.path.basename(f) for f in self.files)}" if self.files else ""
        base = (f"no tests call {self.function}(){where}: guidance is off (plain decoding); add a doctest, "
                f"a test_<module>.py, or a '# egcfg: tests=PATH' comment")
        return f"{base} ({detail})" if detail else base


# ------------------------------------------------------------------------------------------------
# The module under test and the test file's imports of it

def module_names(module_path: str, root: str | None = None) -> list[str]:
    """Dotted names the module may be imported as, longest first: "src.pkg.mathy", "pkg.mathy", "mathy".
    With a root, the folders below it count; without one, every folder up the path does."""
    path = Path(module_path).resolve()
    folders = path.parent.parts[1:]  # without the anchor ("/")
    if root is not None:
        try:
            folders = path.parent.relative_to(Path(root).resolve()).parts
        except ValueError:
            folders = ()  # a module outside the root is importable by its own name only
    parts = [*folders, path.stem] if path.stem != "__init__" else list(folders)  # a package: its name
    return [".".join(parts[i:]) for i in range(len(parts))]


def _is_module(name: str, modules: Sequence[str], level: int) -> bool:
    name = name.strip(".")
    if not name:
        return False
    if level:  # relative import: compare the tail only
        return any(m == name or m.endswith("." + name) for m in modules)
    return name in modules


def rewrite_import(node: ast.Import | ast.ImportFrom, modules: Sequence[str]) -> str:
    """An import of the test file as setup code: the module under test is the program itself."""
    if isinstance(node, ast.ImportFrom):
        source = node.module or ""
        if _is_module(source, modules, node.level):
            # `from pkg.mathy import f, g as h`: f is already the program's; h is an alias of it
            return "\n".join(f"{a.asname} = {a.name}" for a in node.names if a.asname and a.asname != a.name)
        lines = []
        for alias in node.names:
            if _is_module(f"{source}.{alias.name}", modules, node.level):  # `from pkg import mathy`
                lines.append(f"{alias.asname or alias.name} = {NAMESPACE}")
            elif node.level == 0:
                lines.append(ast.unparse(ast.ImportFrom(module=node.module, names=[alias], level=0)))
        return "\n".join(lines)
    lines = []
    for alias in node.names:
        if not _is_module(alias.name, modules, 0):
            lines.append(ast.unparse(ast.Import(names=[alias])))
        elif alias.asname:  # `import pkg.mathy as m`
            lines.append(f"{alias.asname} = {NAMESPACE}")
        else:  # `import pkg.mathy`: pkg.mathy.f must resolve, so build the nested namespaces
            head, *rest = alias.name.split(".")
            value = NAMESPACE
            for part in reversed(rest):
                value = f"__import__('types').SimpleNamespace({part}={value})"
            lines.append(f"{head} = {value}")
    return "\n".join(lines)


def _aliases(tree: ast.Module, function: str | None, modules: Sequence[str]) -> set[str] | None:
    """`function` and the names a test file imports it as (`from pkg.mathy import add as plus`)."""
    if function is None:
        return None
    names = {function}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and _is_module(node.module or "", modules, node.level):
            names |= {a.asname for a in node.names if a.name == function and a.asname}
    return names


def _calls(node: ast.AST, names: set[str] | None) -> bool:
    """Whether `node` uses one of `names` (as `name(...)`, `something.name(...)`, or passed along);
    None stands for any function (every test of the file is wanted)."""
    if names is None:
        return True
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in names:
            return True
        if isinstance(n, ast.Attribute) and n.attr in names:
            return True
    return False


# ------------------------------------------------------------------------------------------------
# pytest parametrize

def _param_names(node: ast.Call) -> list[str] | None:
    if not node.args:
        return None
    try:
        names = ast.literal_eval(node.args[0])
    except ValueError:
        return None
    if isinstance(names, str):
        return [n.strip() for n in names.split(",") if n.strip()]
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def parametrize_cases(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[tuple[str, dict[str, ast.expr]]], str]:
    """[(id, {param: expression})] from `pytest.mark.parametrize` decorators (their product), or ([], why)."""
    product: list[tuple[str, dict[str, ast.expr]]] = [("", {})]
    for deco in func.decorator_list:
        if not (isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("parametrize")):
            continue
        names = _param_names(deco)
        values = deco.args[1] if len(deco.args) > 1 else next((k.value for k in deco.keywords if k.arg == "argvalues"), None)
        if names is None or not isinstance(values, (ast.List, ast.Tuple)):
            return [], f"{func.name} is parametrized with values that are not a literal list"
        cases = []
        for index, value in enumerate(values.elts):
            case_id = ""
            if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("param"):  # pytest.param(..., id=...)
                case_id = next((k.value.value for k in value.keywords if k.arg == "id" and isinstance(k.value, ast.Constant)), "")
                value = ast.Tuple(elts=list(value.args), ctx=ast.Load()) if len(names) > 1 else (value.args[0] if value.args else value)
            items = value.elts if len(names) > 1 and isinstance(value, (ast.Tuple, ast.List)) else [value]
            if len(items) != len(names):
                return [], f"{func.name}: parametrize case {index + 1} has {len(items)} values for {len(names)} names"
            case_id = case_id or "-".join(_short(v) for v in items)
            cases.append((case_id, dict(zip(names, items))))
        product = [("-".join(filter(None, (a, b))), {**da, **db}) for (a, da), (b, db) in itertools.product(product, cases)]
    return product, ""


def _short(node: ast.expr) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 20 else text[:17] + "..."


class _Substitute(ast.NodeTransformer):
    """Replaces parameter names by the parametrize case's expressions."""

    def __init__(self, values: dict[str, ast.expr]):
        self.values = values

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.values:
            return self.values[node.id]
        return node


# ------------------------------------------------------------------------------------------------
# unittest assertions

UNITTEST_ASSERTS = {
    "assertEqual": "({0}) == ({1})", "assertEquals": "({0}) == ({1})", "assertNotEqual": "({0}) != ({1})",
    "assertTrue": "{0}", "assertFalse": "not ({0})", "assertIs": "({0}) is ({1})", "assertIsNot": "({0}) is not ({1})",
    "assertIsNone": "({0}) is None", "assertIsNotNone": "({0}) is not None", "assertIn": "({0}) in ({1})",
    "assertNotIn": "({0}) not in ({1})", "assertIsInstance": "isinstance({0}, {1})",
    "assertNotIsInstance": "not isinstance({0}, {1})", "assertGreater": "({0}) > ({1})",
    "assertGreaterEqual": "({0}) >= ({1})", "assertLess": "({0}) < ({1})", "assertLessEqual": "({0}) <= ({1})",
    "assertAlmostEqual": "round(abs(({0}) - ({1})), 7) == 0", "assertCountEqual": "sorted({0}) == sorted({1})",
    "assertListEqual": "({0}) == ({1})", "assertTupleEqual": "({0}) == ({1})", "assertDictEqual": "({0}) == ({1})",
    "assertSetEqual": "({0}) == ({1})", "assertSequenceEqual": "({0}) == ({1})", "assertMultiLineEqual": "({0}) == ({1})",
}


def as_assert(stmt: ast.stmt) -> ast.Assert | None:
    """`assert ...`, or a unittest `self.assertX(a, b)` call turned into one; None for anything else."""
    if isinstance(stmt, ast.Assert):
        return ast.Assert(test=stmt.test, msg=None)
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    if not (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) and call.func.value.id == "self"):
        return None
    template = UNITTEST_ASSERTS.get(call.func.attr)
    needed = template.count("{1}") + 1 if template else 0
    if template is None or len(call.args) < needed or any(k.arg not in ("msg",) for k in call.keywords):
        return None
    text = template.format(*(ast.unparse(a) for a in call.args[:needed]))
    parsed = ast.parse(f"assert {text}").body[0]
    return ast.Assert(test=parsed.test, msg=None)


def _assert_source(node: ast.Assert) -> str:
    return ast.unparse(ast.fix_missing_locations(node))  # unparse drops the parentheses not needed


# ------------------------------------------------------------------------------------------------
# Test cases in a test file

def tests_in_file(text: str, path: str, function: str | None, modules: Sequence[str]) -> FileTests:
    """The test cases in one test file that call `function` (None: every test case in it).
    `modules` are the dotted names of the module under test (module_names). Raises UserError,
    one sentence, when the text is not Python."""
    tree = _parse(text, path)
    wanted = _aliases(tree, function, modules)
    out = FileTests()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            code = rewrite_import(node, modules)
            if code:
                out.setup.append(code)
        elif isinstance(node, ast.Assert):
            if _calls(node, wanted):
                out.cases.append(TestCase(_assert_source(node), _label(path, node.lineno), path, node.lineno, "assert"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if _calls(node, wanted):
                out.cases.extend(_function_cases(node, path, wanted, out.skipped))
        elif isinstance(node, ast.ClassDef) and _is_test_class(node):
            out.cases.extend(_class_cases(node, path, wanted, out.skipped))
        elif _is_main_guard(node):
            continue  # `if __name__ == "__main__": unittest.main()` must not run
        else:
            out.setup.append(ast.get_source_segment(text, node) or ast.unparse(node))  # helpers, constants
    return out


def _parse(text: str, path: str) -> ast.Module:
    name = os.path.basename(path)
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as error:
        if error.lineno is None:  # not a mistake on a line: null bytes, for one
            raise UserError(f"{name} could not be read as Python: {error.msg}") from None
        raise UserError(f"{name} has a syntax error at line {error.lineno}: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes (older Pythons), absurd nesting
        raise UserError(f"{name} could not be read as Python: {error}") from None


def _label(path: str, line: int) -> str:
    return f"{os.path.basename(path)}:{line}"


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)


def _is_unittest_class(node: ast.ClassDef) -> bool:
    return any(ast.unparse(base).endswith("TestCase") for base in node.bases)


def _is_test_class(node: ast.ClassDef) -> bool:
    return node.name.startswith("Test") or _is_unittest_class(node)


def _function_cases(func: ast.FunctionDef | ast.AsyncFunctionDef, path: str, wanted: set[str] | None,
                    skipped: list[str], method_of: ast.ClassDef | None = None) -> list[TestCase]:
    cases, why = parametrize_cases(func)
    if why:
        skipped.append(why)
        return []
    params = [a.arg for a in func.args.args + func.args.kwonlyargs]
    if method_of is not None and params and params[0] == "self":
        params = params[1:]
    bound = set(cases[0][1]) if cases else set()
    fixtures = [p for p in params if p not in bound]
    unknown = [p for p in fixtures if p not in FIXTURES]
    if unknown:
        skipped.append(f"{func.name} needs the pytest fixture{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        return []
    statements = [stmt for stmt in func.body if not _is_docstring(stmt)]
    asserts = [as_assert(stmt) for stmt in statements]
    simple = isinstance(func, ast.FunctionDef) and not fixtures and asserts and all(asserts) and not (
        method_of is not None and _uses_self_state(func))
    out = []
    for case_id, values in cases:
        label = f"{func.name}[{case_id}]" if case_id else func.name
        if simple:
            calling = [(a, stmt.lineno) for a, stmt in zip(asserts, statements) if _calls(a, wanted)]
            for index, (node, line) in enumerate(calling):
                node = _Substitute(values).visit(ast.parse(_assert_source(node)).body[0])
                suffix = f" #{index + 1}" if len(calling) > 1 else ""
                out.append(TestCase(_assert_source(node), label + suffix, path, line, "assert"))
        else:
            out.append(TestCase(_block(func, values, method_of), label, path, func.lineno, "block"))
    return out


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _uses_self_state(func: ast.FunctionDef) -> bool:
    """Whether a method reads `self.something` other than the assertX helpers (state from setUp)."""
    for node in ast.walk(func):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if not node.attr.startswith("assert"):
                return True
    return False


def _block(func: ast.FunctionDef | ast.AsyncFunctionDef, values: dict[str, ast.expr], method_of: ast.ClassDef | None) -> str:
    """A whole test function as a block: its definition (no decorators) and a call to it."""
    if method_of is not None and _is_unittest_class(method_of):
        # debug() runs setUp, the test and tearDown, and lets the failure propagate
        return f"{_undecorated(method_of)}\n{method_of.name}({func.name!r}).debug()"
    kwargs = {**{name: ast.unparse(v) for name, v in values.items()},
              **{name: FIXTURES[name] for name in [a.arg for a in func.args.args] if name in FIXTURES}}
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    if method_of is not None:  # a method of a plain pytest class: call it on an instance
        definition, call = _undecorated(method_of), f"{method_of.name}().{func.name}({args})"
    else:
        definition, call = _undecorated(func), f"{func.name}({args})"
    if isinstance(func, ast.AsyncFunctionDef):
        call = f"__import__('asyncio').run({call})"
    return f"{definition}\n{call}"


def _undecorated(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    plain = copy.copy(node)
    plain.decorator_list = []
    return ast.unparse(plain)


def _class_cases(node: ast.ClassDef, path: str, wanted: set[str] | None, skipped: list[str]) -> list[TestCase]:
    out = []
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test") and _calls(item, wanted):
            for case in _function_cases(item, path, wanted, skipped, method_of=node):
                out.append(TestCase(case.source, f"{node.name}.{case.label}", case.path, case.line, case.kind))
    return out


# ------------------------------------------------------------------------------------------------
# Doctests

def docstring_of(function: FunctionSite) -> tuple[str | None, int]:
    """The function's docstring and its 1-based line, read from the text between the def and the
    body (the module as a whole need not parse: the body may still be empty)."""
    lines = function.source_before.splitlines(keepends=True)
    head = "".join(lines[function.def_line:function.body_line])
    try:
        tree = ast.parse(textwrap.dedent(head + function.body_indent + "pass\n"))
    except SyntaxError:
        return None, 0
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
        return None, 0
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.value.value, function.def_line + first.lineno
    return None, 0


DOCTEST_FLAGS = doctest.ELLIPSIS  # pytest's default doctest_optionflags; directives in an example add to it


def doctest_cases(docstring: str, path: str, first_line: int, function: str,
                  optionflags: int = DOCTEST_FLAGS) -> tuple[list[TestCase], list[str]]:
    """One test per checked example of the docstring (one with expected output or an expected
    exception, not skipped by a directive), run the way the `doctest` module runs it: the standard
    library's DocTestParser, DocTestRunner and OutputChecker, the examples of the docstring in order
    in one shared namespace (a copy of the module's globals), continuation lines part of their
    example, `# doctest:` directives honoured. The test of example N replays examples 1..N and
    judges only N."""
    try:
        examples = doctest.DocTestParser().get_examples(docstring)
    except ValueError as error:
        return [], [f"the docstring of {function} has a malformed doctest: {error}"]
    cases = []
    for number, example in enumerate(examples, 1):
        if not example.want and example.exc_msg is None:
            continue  # a statement: replayed by the examples after it
        if example.options.get(doctest.SKIP):
            continue
        label = f"doctest {number}"
        body = _doctest_block(docstring, number, f"{function}", first_line, optionflags)
        cases.append(TestCase(body, label, path, first_line + example.lineno, "block"))
    return cases, []


def _doctest_block(docstring: str, upto: int, name: str, first_line: int, optionflags: int) -> str:
    """A block test: the docstring's examples 1..upto run by the stdlib's DocTestRunner in a copy
    of the module's globals; only example `upto` can fail the test (with doctest's own message, or
    the exception it raised unexpectedly)."""
    return "\n".join([
        "import doctest as _egcfg_doctest",
        f"_egcfg_test = _egcfg_doctest.DocTestParser().get_doctest({docstring!r}, dict(globals()), {name!r}, '<doctest>', {first_line})",
        f"_egcfg_test.examples = _egcfg_test.examples[:{upto}]",
        "_egcfg_target = _egcfg_test.examples[-1]",
        "class _EgcfgRunner(_egcfg_doctest.DocTestRunner):",
        "    def report_failure(self, out, test, example, got):",
        "        if example is _egcfg_target:",
        "            raise AssertionError('expected ' + repr(example.want.strip()) + ', got ' + repr(got.strip()))",
        "    def report_unexpected_exception(self, out, test, example, exc_info):",
        "        if example is _egcfg_target:",
        "            raise exc_info[1]",
        f"_EgcfgRunner(optionflags={optionflags}, verbose=False).run(_egcfg_test, out=lambda text: None, clear_globs=False)",
    ])
