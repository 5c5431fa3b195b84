"""make_executable / normalise / dedupe: one test per repair shape, plus the invariants."""

import pytest

from engine.execution.repair import compiles, dedupe, make_executable, normalise


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n    return x + 1\n",
        "x = 1\n\n# trailing comment\n",
        "def f():\r\n\treturn 1\r\n",  # CRLF and tabs: untouched
        "",
    ],
)
def test_code_that_compiles_is_returned_unchanged(code):
    assert make_executable(code) == code


@pytest.mark.parametrize(
    "code, expected",
    [
        # a block header gets a body one level deeper than the header
        ("def f(x):", "def f(x):\n    pass"),
        ("def f(x):\n  y = 1\n  if y:", "def f(x):\n  y = 1\n  if y:\n    pass"),
        ("def f():\n\tfor x in y:\n\t\tif x:", "def f():\n\tfor x in y:\n\t\tif x:\n\t\t\tpass"),
        # else / except / elif / with / class headers
        ("if a:\n    x = 1\nelse:", "if a:\n    x = 1\nelse:\n    pass"),
        ("try:\n    x = 1\nexcept ValueError:", "try:\n    x = 1\nexcept ValueError:\n    pass"),
        ("if a:\n    x = 1\nelif b:", "if a:\n    x = 1\nelif b:\n    pass"),
        ("with open(p) as f:", "with open(p) as f:\n    pass"),
        ("class A:", "class A:\n    pass"),
        # a header with a trailing comment, and comment lines after the header
        ("for i in x:  # loop", "for i in x:  # loop\n    pass"),
        ("def f():\n    # todo", "def f():\n    # todo\n    pass"),
        # a header whose logical line spans several physical lines: indent from its first line
        ("def f(a,\n      b):", "def f(a,\n      b):\n    pass"),
        # a match statement needs a case before any body
        ("match x:", "match x:\n    case _:\n        pass"),
        ("match x:\n    case 1:", "match x:\n    case 1:\n        pass"),
        # decorator followed by its def
        ("@dec\ndef f():", "@dec\ndef f():\n    pass"),
        # a try whose handlers have not started yet: closed with `finally: pass`, exceptions still propagate
        ("try:\n    x = 1", "try:\n    x = 1\nfinally:\n    pass"),
        (
            "try:\n    try:\n        x = 1\n        if x:",
            "try:\n    try:\n        x = 1\n        if x:\n            pass\n    finally:\n        pass\nfinally:\n    pass",
        ),
    ],
)
def test_missing_bodies_get_pass(code, expected):
    assert make_executable(code) == expected


@pytest.mark.parametrize(
    "code, expected",
    [
        # open bracket: the unfinished statement goes, then the header gets its pass
        ("for i in range(3):\n    x = (1,", "for i in range(3):\n    pass"),
        ("def f():\n    return g(1,\n             2,", "def f():\n    pass"),
        # unterminated strings, single and triple quoted
        ('def f():\n    """Doc\n    more doc', "def f():\n    pass"),
        ("x = 1\ny = 'abc", "x = 1"),
        # backslash continuation at the end
        ("x = 1\ny = 2 + \\", "x = 1"),
        # a half-written expression
        ("def f(a):\n    return a +", "def f(a):\n    pass"),
        # inconsistent dedent in the last line
        ("if a:\n    x = 1\n  y = 2", "if a:\n    x = 1"),
        # compile-time errors that ast.parse accepts: `break` outside a loop
        ("while x:\n    break\nbreak", "while x:\n    break"),
        # a lone decorator cannot be completed by pass
        ("x = 1\n@dec", "x = 1"),
    ],
)
def test_unfinished_last_lines_are_dropped(code, expected):
    assert make_executable(code) == expected


@pytest.mark.parametrize("code", ["def f(a, ", "@dec", "x = 1 + \\", "return 5", "\tif a:", "x = )"])
def test_nothing_executable_left_gives_none(code):
    assert make_executable(code) is None


def test_crlf_line_ends_are_kept_in_repairs():
    assert make_executable("def f():\r\n    x = 1\r\n    if x:") == "def f():\r\n    x = 1\r\n    if x:\r\n        pass"


def test_trailing_blank_lines_after_a_header_do_not_change_the_indentation():
    assert make_executable("def f():\n    if x:\n\n   \n") == "def f():\n    if x:\n        pass"


def test_two_space_code_gets_two_space_pass():
    assert make_executable("def f():\n  if x:") == "def f():\n  if x:\n    pass"


def test_odd_inputs_never_raise():
    for code in ["\x00", "(" * 500, "'''", "\\", "def", ":", "\r", "if x:\n\tpass\n        y"]:
        result = make_executable(code)
        assert result is None or compiles(result)


def test_normalise_ignores_comments_blank_lines_and_quotes():
    assert normalise("x = 'a'  # note\n\n\ny = [1,\n  2]") == normalise('x = "a"\ny = [1, 2]')


def test_normalise_keeps_semantics():
    assert normalise("x = 1") != normalise("x = 2")
    assert normalise('def f():\n    """doc"""\n    return 1') != normalise("def f():\n    return 1")
    assert normalise("x = (1, 2)") != normalise("x = [1, 2]")


def test_normalise_of_unparseable_code_is_none():
    assert normalise("def f(:") is None


def test_normalise_ignores_a_repair_pass_next_to_real_statements():
    assert normalise("def f():\n    x = 1\n    pass") == normalise("def f():\n    x = 1")
    assert normalise("def f():\n    pass") != normalise("def f():\n    x = 1")


def test_dedupe_keeps_the_first_of_each_form_in_order():
    codes = [
        "def f():\n    return 2",
        "def f():\n    x = 1\n    pass",
        "def f():\n  x=1",
        "def f():\n    return 2  # again",
        "def f():\n    return 3",
    ]
    assert dedupe(codes) == [codes[0], codes[1], codes[4]]


def test_dedupe_compares_unparseable_code_by_text():
    assert dedupe(["x = (", "x = (", "x = (  "]) == ["x = ("]


@pytest.mark.parametrize(
    "code",
    ["def f(x):\n    if x:", "try:\n    x = (1,", "class A:\n    @property", "for i in y:\n    '''doc", "x = 0\nx = [\n1,\n2"],
)
def test_repair_is_idempotent(code):
    once = make_executable(code)
    assert once is not None and make_executable(once) == once
