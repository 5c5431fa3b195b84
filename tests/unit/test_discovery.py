"""Test discovery for the function at the cursor, on project layouts written by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from lsp_server.discovery import (
    candidate_test_files, discover_tests, doctest_cases, module_names, rewrite_import,
)

import ast


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def sources(suite):
    return [case.source for case in suite.cases]


def test_pytest_file_in_a_tests_folder_of_a_src_layout(tmp_path):
    module = write(tmp_path / "src" / "pkg" / "mathy.py", "def add(a, b):\n    pass\n")
    write(tmp_path / "src" / "pkg" / "__init__.py", "")
    write(tmp_path / "tests" / "unit" / "test_mathy.py", '''\
        import math
        from pkg.mathy import add
        from pkg.mathy import add as plus

        LIMIT = 3

        def test_add():
            """Adds."""
            assert add(1, 2) == 3
            assert plus(2, 2) == 4

        def test_other():
            assert math.floor(1.5) == 1

        assert add(0, 0) == 0
        assert math.pi > 3
        ''')
    suite = discover_tests("add", str(module), module.read_text(), str(tmp_path))
    assert sources(suite) == ["assert add(1, 2) == 3", "assert plus(2, 2) == 4", "assert add(0, 0) == 0"]
    assert [c.label for c in suite.cases] == ["test_add #1", "test_add #2", "test_mathy.py:15"]
    assert [c.line for c in suite.cases] == [9, 10, 15]
    # the module under test is the program: its import disappears, the alias is bound to it
    assert "from pkg.mathy" not in suite.setup and "plus = add" in suite.setup
    assert "import math" in suite.setup and "LIMIT = 3" in suite.setup
    # the package is importable from src/, which is not the workspace root
    assert str(tmp_path / "src") in suite.setup


def test_parametrize_cases_are_substituted(tmp_path):
    module = write(tmp_path / "mathy.py", "def add(a, b):\n    pass\n")
    write(tmp_path / "test_mathy.py", '''\
        import pytest
        from mathy import add

        @pytest.mark.parametrize("a, b, expected", [(1, 2, 3), (2, 2, 4), pytest.param(-1, 1, 0, id="neg")])
        def test_add(a, b, expected):
            assert add(a, b) == expected

        @pytest.mark.parametrize("x", [1, 2])
        @pytest.mark.parametrize("y", [10])
        def test_product(x, y):
            assert add(x, y) > y
        ''')
    suite = discover_tests("add", str(module), module.read_text(), str(tmp_path))
    assert sources(suite) == ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0",
                              "assert add(1, 10) > 10", "assert add(2, 10) > 10"]
    assert [c.label for c in suite.cases][:3] == ["test_add[1-2-3]", "test_add[2-2-4]", "test_add[neg]"]


def test_unittest_asserts_become_asserts_and_stateful_tests_run_as_blocks(tmp_path):
    module = write(tmp_path / "lib" / "shapes.py", "def area(w, h):\n    pass\n")
    write(tmp_path / "lib" / "shapes_test.py", '''\
        import unittest
        from shapes import area

        class AreaTest(unittest.TestCase):
            def test_values(self):
                self.assertEqual(area(2, 3), 6)
                self.assertTrue(area(1, 1) == 1)
                self.assertIn(area(1, 2), [2, 3])
                self.assertAlmostEqual(area(0.5, 2), 1.0)
                self.assertIsNone(None)

            def setUp(self):
                self.side = 4

            def test_square(self):
                self.assertEqual(area(self.side, self.side), 16)

        if __name__ == "__main__":
            unittest.main()
        ''')
    suite = discover_tests("area", str(module), module.read_text(), str(tmp_path))
    asserts = [c for c in suite.cases if c.kind == "assert"]
    assert [c.source for c in asserts] == [
        "assert area(2, 3) == 6", "assert area(1, 1) == 1", "assert area(1, 2) in [2, 3]",
        "assert round(abs(area(0.5, 2) - 1.0), 7) == 0"]
    block = next(c for c in suite.cases if c.kind == "block")
    assert block.label == "AreaTest.test_square"
    assert block.source.endswith("AreaTest('test_square').debug()") and "def setUp(self)" in block.source
    assert "unittest.main" not in suite.setup
    namespace = {"area": lambda w, h: w * h}  # the block really runs setUp + the test
    exec(suite.setup + "\n" + block.source, namespace)


def test_tests_needing_setup_run_as_whole_functions_and_unknown_fixtures_are_reported(tmp_path):
    module = write(tmp_path / "mathy.py", "def add(a, b):\n    pass\n")
    write(tmp_path / "tests" / "test_mathy.py", '''\
        from mathy import add

        def test_loop():
            total = 0
            for i in range(3):
                total = add(total, i)
            assert total == 3

        def test_needs_db(db):
            assert add(db, 1) == 2

        def test_uses_tmp(tmp_path):
            (tmp_path / "x").write_text("1")
            assert add(int((tmp_path / "x").read_text()), 1) == 2
        ''')
    suite = discover_tests("add", str(module), module.read_text(), str(tmp_path))
    assert [c.label for c in suite.cases] == ["test_loop", "test_uses_tmp"]
    assert all(c.kind == "block" for c in suite.cases)
    assert suite.cases[0].source.endswith("\ntest_loop()")
    assert suite.skipped == ["test_needs_db needs the pytest fixture db"]
    for case in suite.cases:  # both blocks run as they are
        exec(suite.setup + "\n" + case.source, {"add": lambda a, b: a + b})


def test_doctests_become_asserts(tmp_path):
    docstring = textwrap.dedent('''\
        Add.

        >>> add(1, 2)
        3
        >>> x = 5
        >>> add(x, 1)
        6
        >>> add("a", "b")
        'ab'
        >>> add(None, 1)
        Traceback (most recent call last):
        TypeError: nope
        >>> Point(1)
        Point(x=1)
        ''')
    cases, skipped = doctest_cases(docstring, "m.py", 2, "add")
    assert [c.source for c in cases] == [
        "assert add(1, 2) == 3",
        "x = 5\nassert add(x, 1) == 6",
        "x = 5\nassert add(\"a\", \"b\") == 'ab'",
        "x = 5\ntry:\n    add(None, 1)\nexcept TypeError:\n    pass\nelse:\n    raise AssertionError('expected TypeError')",
        "x = 5\nassert repr(Point(1)) == 'Point(x=1)'",
    ]
    assert cases[0].line == 4 and skipped == []
    namespace = {"add": lambda a, b: a + b}
    for case in cases[:4]:
        exec(case.source, dict(namespace))


def test_doctests_of_the_function_come_first(tmp_path):
    source = 'def add(a, b):\n    """\n    >>> add(2, 2)\n    4\n    """\n'
    module = write(tmp_path / "mathy.py", source)
    suite = discover_tests("add", str(module), source, str(tmp_path), docstring=ast.get_docstring(ast.parse(source).body[0], clean=False), docstring_line=2)
    assert sources(suite) == ["assert add(2, 2) == 4"] and suite.cases[0].line == 3


def test_a_comment_names_the_test_file_and_patterns_add_more(tmp_path):
    module = write(tmp_path / "app" / "core.py", "# egcfg: tests=../checks/verify_core.py\ndef f(x):\n    pass\n")
    write(tmp_path / "checks" / "verify_core.py", "from app.core import f\nassert f(1) == 2\n")
    write(tmp_path / "spec" / "core_spec.py", "from app import core\nassert core.f(2) == 3\n")
    suite = discover_tests("f", str(module), module.read_text(), str(tmp_path), patterns=["spec/*_spec.py"])
    assert sources(suite) == ["assert f(1) == 2", "assert core.f(2) == 3"]
    assert "core = __import__('types').SimpleNamespace(**globals())" in suite.setup


def test_a_missing_named_file_is_reported(tmp_path):
    module = write(tmp_path / "core.py", "# egcfg: tests=nowhere/test_x.py\ndef f(x):\n    pass\n")
    suite = discover_tests("f", str(module), module.read_text(), str(tmp_path))
    assert suite.cases == [] and "nowhere/test_x.py" in suite.problems[0]
    assert "does not exist" in suite.why_no_tests()


def test_a_test_file_with_a_syntax_error_is_reported_not_fatal(tmp_path):
    module = write(tmp_path / "mathy.py", "def add(a, b):\n    pass\n")
    write(tmp_path / "test_mathy.py", "from mathy import add\ndef test_add(:\n    assert add(1, 2) == 3\n")
    write(tmp_path / "tests" / "test_mathy.py", "from mathy import add\nassert add(1, 1) == 2\n")
    suite = discover_tests("add", str(module), module.read_text(), str(tmp_path))
    assert sources(suite) == ["assert add(1, 1) == 2"]
    assert suite.problems == ["test_mathy.py has a syntax error at line 2: invalid syntax"]


def test_a_module_without_tests_says_why_guidance_is_off(tmp_path):
    module = write(tmp_path / "lonely.py", "def f(x):\n    pass\n")
    write(tmp_path / "tests" / "test_other.py", "def test_x():\n    assert True\n")
    suite = discover_tests("f", str(module), module.read_text(), str(tmp_path))
    assert suite.cases == [] and suite.files == []
    reason = suite.why_no_tests()
    assert "no tests call f()" in reason and "guidance is off" in reason


def test_tests_for_other_functions_are_left_out(tmp_path):
    module = write(tmp_path / "mathy.py", "def add(a, b):\n    pass\ndef sub(a, b):\n    pass\n")
    write(tmp_path / "test_mathy.py", "from mathy import add, sub\ndef test_sub():\n    assert sub(2, 1) == 1\n")
    suite = discover_tests("add", str(module), module.read_text(), str(tmp_path))
    assert suite.cases == [] and suite.files == [str(tmp_path / "test_mathy.py")]


def test_nested_packages_and_nearest_files_first(tmp_path):
    write(tmp_path / "a" / "__init__.py", "")
    write(tmp_path / "a" / "b" / "__init__.py", "")
    module = write(tmp_path / "a" / "b" / "deep.py", "def g():\n    pass\n")
    near = write(tmp_path / "a" / "b" / "test_deep.py", "from a.b.deep import g\nassert g() is None\n")
    far = write(tmp_path / "tests" / "a" / "b" / "test_deep.py", "import a.b.deep\nassert a.b.deep.g() is None\n")
    files = candidate_test_files(str(module), module.read_text(), str(tmp_path))
    assert files == [str(near), str(far)]
    assert module_names(str(module), str(tmp_path)) == ["a.b.deep", "b.deep", "deep"]
    suite = discover_tests("g", str(module), module.read_text(), str(tmp_path))
    assert sources(suite) == ["assert g() is None", "assert a.b.deep.g() is None"]
    namespace = {"g": lambda: None}
    exec(suite.setup, namespace)  # `import a.b.deep` became namespaces over the program's globals
    exec(suite.cases[1].source, namespace)


def test_import_rewriting():
    modules = ["pkg.mathy", "mathy"]
    rewrite = lambda text: rewrite_import(ast.parse(text).body[0], modules)  # noqa: E731
    assert rewrite("from pkg.mathy import add") == ""
    assert rewrite("from pkg.mathy import add as plus, sub") == "plus = add"
    assert rewrite("from .mathy import add") == ""
    assert rewrite("import pkg.mathy as m") == "m = __import__('types').SimpleNamespace(**globals())"
    assert rewrite("import os, mathy") == "import os\nmathy = __import__('types').SimpleNamespace(**globals())"
    assert rewrite("from pkg import mathy, other") == ("mathy = __import__('types').SimpleNamespace(**globals())\n"
                                                         "from pkg import other")
    assert rewrite("from collections import Counter") == "from collections import Counter"
