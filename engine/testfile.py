"""Test cases for one function, read from a test file's text.

The program the executor runs is the module being edited, so a test's `from mathy import f` must
not import the file on disk: imports of the module under test are rewritten to names bound in the
program's own namespace."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from engine.errors import UserError


@dataclass
class FunctionTests:
    tests: list[str] = field(default_factory=list)  # each one `assert` or a block of statements
    setup: str = ""  # imports and helpers the tests need, run before each test


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name or isinstance(n, ast.Attribute) and n.attr == name for n in ast.walk(node))


def _rewrite_import(node: ast.stmt, module: str) -> str | None:
    """Source for an import in the test file, with the module under test bound to the program."""
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[-1] == module:
        kept = [a for a in node.names if a.asname and a.asname != a.name]
        return "\n".join(f"{a.asname} = {a.name}" for a in kept) or None
    if isinstance(node, ast.Import):
        lines = []
        for alias in node.names:
            if alias.name.split(".")[-1] == module:
                lines.append(f"{alias.asname or alias.name.split('.')[0]} = __import__('types').SimpleNamespace(**globals())")
            else:
                lines.append(ast.unparse(ast.Import(names=[alias])))
        return "\n".join(lines)
    return ast.unparse(node)


def _literal_cases(decorators: list[ast.expr]) -> list[dict[str, ast.expr]] | None:
    """`pytest.mark.parametrize("a,b", [(1, 2), ...])` cases as name -> expression, or None."""
    for deco in decorators:
        if not (isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("mark.parametrize") and len(deco.args) >= 2):
            continue
        try:
            names = ast.literal_eval(deco.args[0])
        except ValueError:
            return None
        names = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
        if not isinstance(deco.args[1], (ast.List, ast.Tuple)):
            return None
        cases = []
        for case in deco.args[1].elts:
            values = case.elts if len(names) > 1 and isinstance(case, (ast.Tuple, ast.List)) else [case]
            if len(values) != len(names):
                return None
            cases.append(dict(zip(names, values)))
        return cases
    return []


class _Substitute(ast.NodeTransformer):
    def __init__(self, values: dict[str, ast.expr]):
        self.values = values

    def visit_Name(self, node: ast.Name) -> ast.expr:
        return self.values.get(node.id, node)


_UNITTEST = {
    "assertEqual": "{0} == {1}", "assertNotEqual": "{0} != {1}", "assertTrue": "{0}", "assertFalse": "not {0}",
    "assertIn": "{0} in {1}", "assertNotIn": "{0} not in {1}", "assertIs": "{0} is {1}", "assertIsNot": "{0} is not {1}",
    "assertIsNone": "{0} is None", "assertIsNotNone": "{0} is not None", "assertGreater": "{0} > {1}",
    "assertLess": "{0} < {1}", "assertGreaterEqual": "{0} >= {1}", "assertLessEqual": "{0} <= {1}",
    "assertListEqual": "{0} == {1}", "assertDictEqual": "{0} == {1}", "assertTupleEqual": "{0} == {1}",
    "assertCountEqual": "sorted({0}) == sorted({1})",
}


def _as_assert(stmt: ast.stmt) -> str | None:
    """An assert statement, or a unittest `self.assertX(...)` call as one; None for anything else."""
    if isinstance(stmt, ast.Assert):
        return ast.unparse(ast.Assert(test=stmt.test))
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Attribute):
        template = _UNITTEST.get(stmt.value.func.attr)
        args = stmt.value.args
        if template and len(args) >= template.count("{") and not stmt.value.keywords:
            text = "assert " + template.format(*(f"({ast.unparse(a)})" for a in args))
            return ast.unparse(ast.parse(text))  # drops the parentheses that were not needed
    return None


def _function_tests(func: ast.FunctionDef, name: str, in_class: str | None) -> list[str]:
    if not _mentions(func, name):
        return []
    cases = _literal_cases(func.decorator_list)
    params = [a.arg for a in func.args.args if a.arg != "self"]
    if cases is None or (params and not cases):
        return []  # needs fixtures or non-literal parametrisation: pytest would have to run it
    asserts = [_as_assert(s) for s in func.body]
    if all(asserts):
        if not cases:
            return [a for a in asserts if a]
        out = []
        for case in cases:
            for stmt in func.body:
                node = _Substitute(case).visit(ast.parse(_as_assert(stmt)))
                out.append(ast.unparse(node))
        return out
    if params or in_class:
        return []  # a whole test method with setup: left to pytest itself
    return [ast.unparse(func) + f"\n{func.name}()"]


def cases_for_function(test_source: str, function_name: str, module_name: str, path: str = "the tests file") -> FunctionTests:
    """Every test case in `test_source` that exercises `function_name`."""
    try:
        tree = ast.parse(test_source)
    except SyntaxError as error:
        raise UserError(f"{path} has a syntax error on line {error.lineno}: {error.msg}") from None
    suite = FunctionTests()
    setup = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if (code := _rewrite_import(node, module_name)) is not None:
                setup.append(code)
        elif isinstance(node, ast.Assert) and _mentions(node, function_name):
            suite.tests.append(ast.unparse(node))
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            suite.tests.extend(_function_tests(node, function_name, None))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    suite.tests.extend(_function_tests(item, function_name, node.name))
        elif isinstance(node, ast.FunctionDef):
            setup.append(ast.unparse(node))  # helpers the tests call
    suite.setup = "\n".join(setup)
    return suite
