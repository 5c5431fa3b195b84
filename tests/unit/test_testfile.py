import pytest

from engine.errors import UserError
from engine.testfile import cases_for_function

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


def test_fixture(tmp_path):
    assert a(1) == 1


class TestArea:
    def test_unittest_style(self):
        self.assertEqual(a(2), 4)
        self.assertTrue(a(1) > 0)


assert a(5) == 25
'''


def test_every_shape_of_test_becomes_a_case():
    suite = cases_for_function(TESTS, "a", "mathy")
    assert suite.tests[:2] == ["assert a(2) == 4", "assert a(0) == 0"]
    assert "assert a(1) == 1" in suite.tests and "assert a(3) == 9" in suite.tests  # parametrize substituted
    assert "assert a(2) == 4" in suite.tests[2:] and "assert a(1) > 0" in suite.tests  # unittest calls
    assert "assert a(5) == 25" in suite.tests
    block = [t for t in suite.tests if t.startswith("def test_with_setup")]
    assert block and block[0].endswith("\ntest_with_setup()")
    assert not any("other(" in t for t in suite.tests)
    assert not any("tmp_path" in t for t in suite.tests)  # fixtures need pytest itself


def test_imports_of_the_module_under_test_bind_to_the_program():
    suite = cases_for_function(TESTS, "a", "mathy")
    assert "a = area" in suite.setup and "from pkg.mathy" not in suite.setup
    assert "pkg = __import__('types').SimpleNamespace(**globals())" in suite.setup
    assert "import math" in suite.setup and "def helper(x):" in suite.setup


def test_syntax_error_is_one_sentence_with_the_line():
    with pytest.raises(UserError, match="tests.py has a syntax error on line 2"):
        cases_for_function("x = 1\nassert f(1) ==\n", "f", "m", "tests.py")
