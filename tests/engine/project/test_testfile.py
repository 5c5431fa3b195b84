"""Turning text into test cases (engine/project/testfile.py): test files, parametrize, unittest, imports of the
module under test, doctests; and how `egcfg complete` gathers its tests with it. Finding the files:
tests/lsp_server/test_discovery.py."""

from __future__ import annotations

import argparse
import ast
import textwrap
from pathlib import Path

import pytest

from engine.cli.complete import collect_tests
from engine.errors import UserError
from engine.project.locate import find_function
from engine.project.testfile import (
    FileTests, TestCase, TestSuite, docstring_of, doctest_cases, module_names, rewrite_import, tests_in_file,
)

NAMESPACE = "__import__('types').SimpleNamespace(**globals())"


def parse(text: str, function: str | None, modules: list[str], path: str = "test_mathy.py") -> FileTests:
    return tests_in_file(textwrap.dedent(text), path, function, modules)


def sources(found) -> list[str]:
    return [case.source for case in found.cases]


def setup_of(found: FileTests) -> str:
    return "\n".join(found.setup)


# ------------------------------------------------------------------------------------------------
# Every shape of test in one file

TESTS = '''
import math
import pytest
from pkg.mathy import area as a, other
import pkg.mathy


def helper(x):
    return x + 1


def test_plain():
    assert a(2) == 4
    assert a(0) == 0


@pytest.mark.parametrize("side,expected", [(1, 1), (3, 9)])
def test_param(side, expected):
    assert a(side) == expected


def test_other_function_only():
    assert other(1) == 2


def test_with_setup():
    side = helper(1)
    assert a(side) == 4


def test_fixture(capsys):
    assert a(1) == 1


class TestArea:
    def test_unittest_style(self):
        self.assertEqual(a(2), 4)
        self.assertTrue(a(1) > 0)


assert a(5) == 25
'''
MATHY = ["pkg.mathy", "mathy"]


def test_every_shape_of_test_becomes_a_case():
    found = tests_in_file(TESTS, "tests.py", "a", MATHY)
    tests = sources(found)
    assert tests[:2] == ["assert a(2) == 4", "assert a(0) == 0"]
    assert "assert a(1) == 1" in tests and "assert a(3) == 9" in tests  # parametrize substituted
    assert "assert a(2) == 4" in tests[2:] and "assert a(1) > 0" in tests  # unittest calls
    assert "assert a(5) == 25" in tests
    block = [t for t in tests if t.startswith("def test_with_setup")]
    assert block and block[0].endswith("\ntest_with_setup()")
    assert not any("other(" in t for t in tests)
    assert not any("capsys" in t for t in tests)  # fixtures that need pytest itself
    assert found.skipped == ["test_fixture needs the pytest fixture capsys"]


def test_imports_of_the_module_under_test_bind_to_the_program():
    setup = setup_of(tests_in_file(TESTS, "tests.py", "a", MATHY))
    assert "a = area" in setup and "from pkg.mathy" not in setup
    # `import pkg.mathy`: pkg.mathy.area must be the program's area, so the namespaces nest
    assert f"pkg = __import__('types').SimpleNamespace(mathy={NAMESPACE})" in setup
    assert "import math" in setup and "def helper(x):" in setup
    namespace = {"area": lambda side: side * side, "other": None}
    exec(setup, namespace)
    assert namespace["pkg"].mathy.area(3) == 9 and namespace["a"](2) == 4 and namespace["helper"](1) == 2


def test_syntax_error_is_one_sentence_with_the_line():
    with pytest.raises(UserError, match="tests.py has a syntax error at line 2"):
        tests_in_file("x = 1\nassert f(1) ==\n", "some/dir/tests.py", "f", ["m"])


def test_text_that_is_not_python_is_one_sentence():
    with pytest.raises(UserError, match="tests.py could not be read as Python"):
        tests_in_file("assert f(1) == 1\n\0\n", "tests.py", "f", ["m"])


def test_without_a_function_every_test_of_the_file_is_wanted():
    found = parse('''\
        from mathy import add, sub

        def test_add():
            assert add(1, 2) == 3

        def test_sub():
            assert sub(2, 1) == 1

        assert True
        ''', None, ["mathy"])
    assert sources(found) == ["assert add(1, 2) == 3", "assert sub(2, 1) == 1", "assert True"]
    assert [c.label for c in found.cases] == ["test_add", "test_sub", "test_mathy.py:9"]


# ------------------------------------------------------------------------------------------------
# pytest and unittest

def test_parametrize_cases_are_substituted():
    found = parse('''\
        import pytest
        from mathy import add

        @pytest.mark.parametrize("a, b, expected", [(1, 2, 3), (2, 2, 4), pytest.param(-1, 1, 0, id="neg")])
        def test_add(a, b, expected):
            assert add(a, b) == expected

        @pytest.mark.parametrize("x", [1, 2])
        @pytest.mark.parametrize("y", [10])
        def test_product(x, y):
            assert add(x, y) > y
        ''', "add", ["mathy"])
    assert sources(found) == ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0",
                              "assert add(1, 10) > 10", "assert add(2, 10) > 10"]
    assert [c.label for c in found.cases][:3] == ["test_add[1-2-3]", "test_add[2-2-4]", "test_add[neg]"]


def test_parametrize_with_values_that_are_not_literal_is_skipped_with_the_reason():
    found = parse('''\
        import pytest
        from mathy import add
        CASES = [(1, 2)]

        @pytest.mark.parametrize("a, b", CASES)
        def test_add(a, b):
            assert add(a, b) == a + b
        ''', "add", ["mathy"])
    assert found.cases == []
    assert found.skipped == ["test_add is parametrized with values that are not a literal list"]


def test_unittest_asserts_become_asserts_and_stateful_tests_run_as_blocks():
    found = parse('''\
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
        ''', "area", ["lib.shapes", "shapes"], path="shapes_test.py")
    asserts = [c for c in found.cases if c.kind == "assert"]
    assert [c.source for c in asserts] == [
        "assert area(2, 3) == 6", "assert area(1, 1) == 1", "assert area(1, 2) in [2, 3]",
        "assert round(abs(area(0.5, 2) - 1.0), 7) == 0"]
    block = next(c for c in found.cases if c.kind == "block")
    assert block.label == "AreaTest.test_square"
    assert block.source.endswith("AreaTest('test_square').debug()") and "def setUp(self)" in block.source
    assert "unittest.main" not in setup_of(found)
    namespace = {"area": lambda w, h: w * h}  # the block really runs setUp + the test
    exec(setup_of(found) + "\n" + block.source, namespace)
    with pytest.raises(AssertionError):  # and fails when the function is wrong
        exec(setup_of(found) + "\n" + block.source, {"area": lambda w, h: w + h})


def test_tests_needing_setup_run_as_whole_functions_and_unknown_fixtures_are_reported():
    found = parse('''\
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
        ''', "add", ["mathy"])
    assert [c.label for c in found.cases] == ["test_loop", "test_uses_tmp"]
    assert all(c.kind == "block" for c in found.cases)
    assert found.cases[0].source.endswith("\ntest_loop()")
    assert found.skipped == ["test_needs_db needs the pytest fixture db"]
    for case in found.cases:  # both blocks run as they are
        exec(setup_of(found) + "\n" + case.source, {"add": lambda a, b: a + b})


# ------------------------------------------------------------------------------------------------
# Imports of the module under test

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
    assert rewrite("from other.mathy import add") == "from other.mathy import add"  # another module, same stem


def test_module_names_below_a_root_or_up_the_whole_path(tmp_path):
    module = tmp_path / "src" / "pkg" / "mathy.py"
    assert module_names(str(module), str(tmp_path)) == ["src.pkg.mathy", "pkg.mathy", "mathy"]
    assert module_names(str(module), str(tmp_path / "elsewhere")) == ["mathy"]
    everywhere = module_names(str(module))
    assert everywhere[-3:] == ["src.pkg.mathy", "pkg.mathy", "mathy"] and len(everywhere) > 3
    init = tmp_path / "src" / "pkg" / "__init__.py"   # a package is imported by its own name
    assert module_names(str(init), str(tmp_path)) == ["src.pkg", "pkg"]


# ------------------------------------------------------------------------------------------------
# Doctests

def test_doctests_run_the_way_the_doctest_module_runs_them():
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
        >>> add(1.0, 2)
        3
        >>> c = iter(range(10))
        >>> next(c)
        0
        >>> next(c)
        1
        >>> list(range(12))  # doctest: +NORMALIZE_WHITESPACE
        [0, 1, 2, 3, 4, 5, 6, 7,
         8, 9, 10, 11]
        >>> [add(i,
        ...      1) for i in range(20)]
        [1, 2, ..., 20]
        >>> print("never run")  # doctest: +SKIP
        whatever
        ''')
    cases, skipped = doctest_cases(docstring, "m.py", 2, "add")
    assert [c.label for c in cases] == ["doctest 1", "doctest 3", "doctest 4", "doctest 5", "doctest 6",
                                        "doctest 8", "doctest 9", "doctest 10", "doctest 11"]
    assert cases[0].line == 4 and all(c.kind == "block" for c in cases) and skipped == []

    def add(a, b):
        if a is None:
            raise TypeError("nope")
        return a + b

    outcomes = {}
    for case in cases:
        try:
            exec(case.source, {"add": add, "__name__": "m"})
            outcomes[case.label] = "pass"
        except AssertionError as error:
            outcomes[case.label] = str(error)
    # 3.0 is not 3 for doctest (its output is compared as text); everything else passes, the stateful
    # iterator included (example 9 replays example 8), as do the directive and the continuation line
    assert outcomes.pop("doctest 6") == "expected '3', got '3.0'"
    assert set(outcomes.values()) == {"pass"}


def test_the_docstring_is_read_even_when_the_body_is_still_empty():
    source = 'import math\n\ndef area(r):\n    """Area.\n\n    >>> area(1)\n    3.14\n    """\n\nx = 1\n'
    site = find_function(source, name="area")
    docstring, line = docstring_of(site)
    assert ">>> area(1)" in docstring and line == 4
    assert docstring_of(find_function("def f():\n    return 1\n", name="f")) == (None, 0)


# ------------------------------------------------------------------------------------------------
# A suite over several files

def test_a_suite_takes_setup_only_from_files_with_cases_and_once():
    suite = TestSuite("add", setup="import sys")
    suite.include(FileTests([], ["import noisy_module"], ["test_x needs the pytest fixture db"]))
    case = TestCase("assert add(1, 1) == 2", "t", "t.py", 1, "assert")
    suite.include(FileTests([case], ["import math", "import sys"], []))
    suite.include(FileTests([case], ["import math", "def helper():\n    return 1"], []))
    assert suite.setup == "import sys\nimport math\ndef helper():\n    return 1"
    assert suite.cases == [case, case] and suite.skipped == ["test_x needs the pytest fixture db"]


# ------------------------------------------------------------------------------------------------
# `egcfg complete`'s tests

MODULE = '''\
def add(a, b):
    """Add two numbers.

    >>> add(2, 3)
    5
    """
'''


def complete_args(*tests: str, files: tuple[str, ...] = ()) -> argparse.Namespace:
    return argparse.Namespace(test=list(tests), tests=list(files))


def site_in(tmp_path: Path, source: str, function: str):
    path = tmp_path / "mathy.py"
    path.write_text(source)
    return find_function(source, name=function), path


def test_complete_uses_the_doctests_when_no_tests_are_given(tmp_path):
    site, path = site_in(tmp_path, MODULE, "add")
    suite = collect_tests(complete_args(), site, path)
    assert len(suite.cases) == 1 and "DocTestRunner" in suite.cases[0].source
    assert suite.cases[0].label == "doctest 1" and suite.cases[0].line == 4  # the line of its `>>>`


def test_complete_puts_doctests_then_test_options_then_test_files(tmp_path):
    site, path = site_in(tmp_path, MODULE, "add")
    tests = tmp_path / "tests" / "test_mathy.py"
    tests.parent.mkdir()
    tests.write_text("import math\nfrom mathy import add as plus\n\ndef test_add():\n    assert plus(1, 1) == 2\n")
    suite = collect_tests(complete_args("assert add(0, 0) == 0", "x = add(1, 2)\nassert x == 3", files=(str(tests),)),
                          site, path)
    assert [c.source for c in suite.cases][1:] == [
        "assert add(0, 0) == 0", "x = add(1, 2)\nassert x == 3", "assert plus(1, 1) == 2"]
    assert suite.cases[0].label == "doctest 1" and "DocTestRunner" in suite.cases[0].source
    assert [c.kind for c in suite.cases] == ["block", "assert", "block", "assert"]
    assert suite.setup == "import math\nplus = add" and suite.files == [str(tests)]


def test_complete_without_any_tests_is_a_clear_error(tmp_path):
    site, path = site_in(tmp_path, "def add(a, b):\n    pass\n", "add")
    with pytest.raises(UserError, match=r"no tests given: pass --test .* or write >>> examples in the docstring"):
        collect_tests(complete_args(), site, path)


def test_complete_with_a_test_file_that_has_no_tests_for_the_function(tmp_path):
    site, path = site_in(tmp_path, MODULE, "add")
    tests = tmp_path / "test_other.py"
    tests.write_text("from mathy import sub\n\ndef test_sub():\n    assert sub(2, 1) == 1\n\ndef test_db(db):\n    assert add(db) == 1\n")
    with pytest.raises(UserError, match=r"test_other.py has no tests that call add \(test_db needs the pytest fixture db\)"):
        collect_tests(complete_args(files=(str(tests),)), site, path)


def test_complete_with_a_test_file_that_does_not_parse(tmp_path):
    site, path = site_in(tmp_path, MODULE, "add")
    tests = tmp_path / "test_mathy.py"
    tests.write_text("def test_add(:\n    assert add(1, 2) == 3\n")
    with pytest.raises(UserError, match="test_mathy.py has a syntax error at line 1"):
        collect_tests(complete_args(files=(str(tests),)), site, path)
    with pytest.raises(UserError, match="no such file"):
        collect_tests(complete_args(files=(str(tmp_path / "missing.py"),)), site, path)


def test_complete_rejects_a_test_option_that_does_not_parse(tmp_path):
    site, path = site_in(tmp_path, MODULE, "add")
    with pytest.raises(UserError, match="--test number 2 does not parse"):
        collect_tests(complete_args("assert add(1, 1) == 2", "assert add(1,"), site, path)
    with pytest.raises(UserError, match="--test number 1 is empty"):
        collect_tests(complete_args("  "), site, path)
