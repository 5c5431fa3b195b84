import pytest

from engine.errors import UserError
from engine.project.locate import check_rest_parses, find_function

MODULE = '''import math


def running_total(xs):
    """Running sums."""


def norm(v):
    total = 0
    for x in v:
        total += x * x
    return math.sqrt(total)


class Shape:
    def area(self):
        """Area."""
        return 0
'''


def test_by_name_empty_body_with_docstring():
    site = find_function(MODULE, "running_total")
    assert site.source_before.endswith('    """Running sums."""\n')
    assert site.source_after.startswith("\n\ndef norm(v):")
    assert site.body == "" and site.body_indent == "    "


def test_by_name_keeps_written_body_and_everything_after():
    site = find_function(MODULE, "norm")
    assert site.body.startswith("    total = 0\n") and site.body.endswith("return math.sqrt(total)\n")
    assert site.source_after.lstrip().startswith("class Shape:")


def test_cursor_on_indented_blank_line_after_docstring():
    text = "def f(x):\n    \"\"\"Doc.\"\"\"\n    \n\nx = 1\n"
    site = find_function(text, line=2)
    assert site.name == "f" and site.source_before == "def f(x):\n    \"\"\"Doc.\"\"\"\n"
    assert site.source_after == "    \n\nx = 1\n"


def test_cursor_in_method_wins_over_class_and_cuts_body_at_cursor():
    lines = MODULE.splitlines()
    row = lines.index("        return 0")
    site = find_function(MODULE, line=row)
    assert site.name == "area" and site.body == "" and site.body_indent == "        "


def test_cursor_outside_any_function():
    with pytest.raises(UserError, match="not inside a function"):
        find_function(MODULE, line=0)


def test_missing_function_is_one_clear_sentence():
    with pytest.raises(UserError, match="no function named 'nope'") as info:
        find_function(MODULE, "nope")
    assert "\n" not in str(info.value)


def test_multiline_signature_and_no_docstring():
    site = find_function("def g(a,\n      b):\n", "g")
    assert site.source_before == "def g(a,\n      b):\n" and site.body_indent == "    "


def test_syntax_error_elsewhere_is_reported_with_its_line():
    text = MODULE + "\ndef broken(:\n    pass\n"
    site = find_function(text, "running_total")
    with pytest.raises(UserError, match=r"syntax error outside running_total \(line 21"):
        check_rest_parses(site, "mod.py")
    check_rest_parses(find_function(MODULE, "running_total"))  # the function's own empty body is fine
