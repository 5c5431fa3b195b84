"""What reruns after an edit (the call graph and the result cache), the compact hints and the lenses:
pure functions over real traces from the in-process tracer."""

from __future__ import annotations

import textwrap

from lsp_server.analysis import Caches, analyse
from lsp_server.callgraph import module_graph
from lsp_server.diagnostics import functions_in
from lsp_server.hints import function_lens, line_hint
from lsp_server.settings import Settings

from test_lsp_diagnostics import Job, run

MODULE = textwrap.dedent('''\
    import math

    LIMIT = 10


    def double(x):
        return 2 * x


    def quad(x):
        return double(double(x))


    def root(x):
        """Square root."""
        return math.sqrt(x)


    def todo(x):
        """Not written yet."""
''')

TESTS = textwrap.dedent('''\
    from m import double, quad, root, todo

    def test_double():
        assert double(2) == 4
        assert double(-1) == -2

    def test_quad():
        assert quad(1) == 4

    def test_root():
        assert root(9) == 3.0

    def test_todo():
        assert todo(1) == 1
''')


class Counting:
    """run_tests over the in-process tracer, remembering which functions' tests ran."""

    def __init__(self):
        self.ran: list[list[str]] = []

    def __call__(self, jobs):
        self.ran.append([tests[0] for _, tests, _ in jobs])
        return [Job(run(program, tests, setup)) for program, tests, setup in jobs]


def project(tmp_path, text=MODULE):
    module = tmp_path / "m.py"
    module.write_text(text)
    (tmp_path / "test_m.py").write_text(TESTS)
    return module


def analysed(tmp_path, text, caches, runner):
    return analyse(text, 1, str(tmp_path / "m.py"), str(tmp_path), Settings(), lambda p: open(p).read(), runner, caches)


def ran_functions(runner) -> set[str]:
    return {test.split("(")[0].split()[-1] for batch in runner.ran for test in batch}


def test_the_call_graph_follows_callers_and_is_conservative_with_dynamic_lookups():
    graph = module_graph(MODULE)
    quad = functions_in(MODULE)[1]
    before = graph.fingerprint(quad.def_line)
    edited = module_graph(MODULE.replace("return 2 * x", "return x + x"))
    assert edited.fingerprint(quad.def_line) != before              # quad calls double
    root_line = functions_in(MODULE)[2].def_line
    assert edited.fingerprint(root_line) == graph.fingerprint(root_line)   # root does not
    glue = module_graph(MODULE.replace("LIMIT = 10", "LIMIT = 11"))
    assert glue.fingerprint(root_line) != graph.fingerprint(root_line)     # module-level code reaches all
    methods = "class Box:\n    def size(self):\n        return 1\n\n\ndef measure(box):\n    return box.size()\n"
    m1, m2 = module_graph(methods), module_graph(methods.replace("return 1", "return 2"))
    assert m1.fingerprint(5) != m2.fingerprint(5)                    # box.size() reaches Box through its method
    assert m1.fingerprint(5, ["size"]) != m2.fingerprint(5, ["size"])
    dynamic = "def pick(name):\n    return globals()[name]\n\n" + MODULE
    d1, d2 = module_graph(dynamic), module_graph(dynamic.replace("return 2 * x", "return x + x"))
    assert d1.fingerprint(0) != d2.fingerprint(0)                    # globals(): depends on everything


def test_an_edit_reruns_only_the_edited_function_and_its_callers(tmp_path):
    project(tmp_path)
    caches, first = Caches(), Counting()
    analysis = analysed(tmp_path, MODULE, caches, first)
    assert ran_functions(first) == {"double", "quad", "root", "todo"}
    assert (analysis.passed, analysis.total) == (3, 4)   # test_double: two asserts, one test

    again = Counting()
    edited = MODULE.replace("return 2 * x", "return x * 2")
    analysis = analysed(tmp_path, edited, caches, again)
    assert ran_functions(again) == {"double", "quad"}
    assert (analysis.passed, analysis.total) == (3, 4)

    # lines inserted above: nothing reruns, the cached values move with their function
    shifted_text = "# a comment\n# another\n" + edited
    quiet = Counting()
    analysis = analysed(tmp_path, shifted_text, caches, quiet)
    assert quiet.ran == []
    root_run = next(r for r in analysis.runs if r.span.name == "root")
    sqrt_line = shifted_text.splitlines().index("    return math.sqrt(x)")
    assert root_run.span.def_line == sqrt_line - 2 and sqrt_line in root_run.records[0].lines
    assert any(n.line == sqrt_line and "returns 3.0" in n.message for n in analysis.notes)


def test_hints_are_compact_and_number_the_tests_only_where_they_differ(tmp_path):
    project(tmp_path)
    analysis = analysed(tmp_path, MODULE, Caches(), Counting())
    double = next(r for r in analysis.runs if r.span.name == "double")
    line = double.span.def_line + 1
    assert line_hint(double.records, line) == "t1: → 4 · t2: → -2"
    quad = next(r for r in analysis.runs if r.span.name == "quad")
    assert line_hint(quad.records, quad.span.def_line + 1) == "→ 4"

    loop = textwrap.dedent('''\
        def total(xs):
            t = 0
            for x in xs:
                t += x
            return t
    ''')
    span = functions_in(loop)[0]
    from lsp_server.diagnostics import fold_all
    from test_lsp_diagnostics import case
    cases = [case("assert total([1, 2, 3]) == 6", "a"), case("assert total([10 ** 40, 1]) == 10 ** 40 + 1", "b")]
    records = fold_all(span, cases, run(loop, [c.source for c in cases]))
    assert line_hint(records, 1) == "t = 0"                            # the same in every test: said once
    long = line_hint(records, 3)
    assert long.startswith("t1: t = 1, 3, 6 · t2: t = 10000") and "…" in long and len(long) <= 72


def test_lenses_say_how_a_function_does_and_what_clicking_does(tmp_path):
    project(tmp_path)
    analysis = analysed(tmp_path, MODULE, Caches(), Counting())
    lenses = {r.span.name: function_lens(r.span, r.records, "file:///m.py") for r in analysis.runs}
    assert lenses["double"].title == "✓ 1/1 tests"   # one test function, two asserts and lenses["double"].command == "egcfg.showTrace"
    assert lenses["todo"].title.startswith("Complete with tests") and lenses["todo"].command == "egcfg.completeWithTests"
    todo = next(r for r in analysis.runs if r.span.name == "todo").span
    assert lenses["todo"].arguments == {"uri": "file:///m.py", "line": todo.def_line + 2, "character": 4}
    broken = MODULE.replace("return math.sqrt(x)", "return math.sqrt(x) + 1")
    failing = analysed(tmp_path, broken, Caches(), Counting())
    lens = next(function_lens(r.span, r.records, "u") for r in failing.runs if r.span.name == "root")
    assert lens.title == "✗ 0/1 tests · Fix with EG-CFG" and lens.command == "egcfg.regenerateFrom"
    assert lens.arguments["line"] == next(r.span.body_line for r in failing.runs if r.span.name == "root")


def test_a_lens_counts_a_test_function_with_two_asserts_as_one_test():
    from lsp_server.diagnostics import TestRecord

    span = functions_in("def f(x):\n    return x\n")[0]
    records = [TestRecord("test_f #1", "t1", "pass", "", "assert f(1) == 1"),
               TestRecord("test_f #2", "t2", "fail", "", "assert f(2) == 3"),
               TestRecord("test_g", "t3", "pass", "", "assert f(0) == 0"),
               TestRecord("test_h[a #2]", "t4", "pass", "", "assert f(5) == 5")]  # a parameter id, kept whole
    assert function_lens(span, records, "u").title == "✗ 2/3 tests · Fix with EG-CFG"
    assert function_lens(span, records[2:], "u").title == "✓ 2/2 tests"
