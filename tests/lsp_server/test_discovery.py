"""Test discovery for the function at the cursor, on project layouts written by the tests: which files
are read, in what order, and what a suite reports. Parsing the files' text: tests/engine/project/test_testfile.py."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from engine.project.testfile import module_names
from lsp_server.discovery import candidate_test_files, discover_tests


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


def test_a_module_test_file_next_to_the_module_is_found(tmp_path):
    module = write(tmp_path / "lib" / "shapes.py", "def area(w, h):\n    pass\n")
    tests = write(tmp_path / "lib" / "shapes_test.py", "from shapes import area\nassert area(2, 3) == 6\n")
    assert candidate_test_files(str(module), module.read_text(), str(tmp_path)) == [str(tests)]
    suite = discover_tests("area", str(module), module.read_text(), str(tmp_path))
    assert sources(suite) == ["assert area(2, 3) == 6"] and suite.files == [str(tests)]
    # lib/ is not the workspace root: the tests' `from shapes import` needs it on sys.path
    assert f"_egcfg_sys.path.insert(0, {str(tmp_path / 'lib')!r})" in suite.setup


def test_doctests_of_the_function_come_first(tmp_path):
    source = 'def add(a, b):\n    """\n    >>> add(2, 2)\n    4\n    """\n'
    module = write(tmp_path / "mathy.py", source)
    suite = discover_tests("add", str(module), source, str(tmp_path), docstring=ast.get_docstring(ast.parse(source).body[0], clean=False), docstring_line=2)
    assert len(suite.cases) == 1 and suite.cases[0].line == 3 and suite.cases[0].label == "doctest 1"
    assert suite.cases[0].kind == "block" and "DocTestRunner" in suite.cases[0].source  # run as doctest runs it


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
    assert str(tmp_path / "test_mathy.py") in suite.files  # still watched: fixing it re-runs the tests


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


def test_a_packages_init_finds_the_tests_named_after_the_package(tmp_path):
    """inflection/__init__.py is tested by test_inflection.py beside the package, parse's by
    tests/test_parse.py: no project names a file test___init__.py."""
    from lsp_server.discovery import candidate_test_files

    init = tmp_path / "inflection" / "__init__.py"
    init.parent.mkdir()
    init.write_text("def camelize(s):\n    return s\n")
    beside = tmp_path / "test_inflection.py"
    beside.write_text("from inflection import camelize\n\n\ndef test_c():\n    assert camelize('a') == 'a'\n")
    (tmp_path / "tests").mkdir()
    under = tmp_path / "tests" / "test_inflection.py"
    under.write_text(beside.read_text())
    (tmp_path / "test___init__.py").write_text("")  # a module named __init__ it is not
    assert candidate_test_files(str(init), init.read_text(), str(tmp_path)) == [str(beside), str(under)]
    module = tmp_path / "inflection" / "words.py"
    module.write_text("")
    assert candidate_test_files(str(module), "", str(tmp_path)) == []


def test_test_files_that_import_the_module_are_found_after_the_ones_named_after_it(tmp_path):
    """tabulate's tests are test/test_output.py, test/test_api.py...: named after what they test."""
    from lsp_server.discovery import candidate_test_files

    module = tmp_path / "src" / "pkg" / "util.py"
    module.parent.mkdir(parents=True)
    (module.parent / "__init__.py").write_text("")
    module.write_text("def pad(s):\n    return s\n")
    tests = tmp_path / "tests"
    (tests / "deep").mkdir(parents=True)
    named = tests / "test_util.py"
    named.write_text("from pkg.util import pad\n")
    files = {
        "test_api.py": "import os\nfrom pkg import (\n    other,\n    util as u,\n)\n",
        "deep/test_output.py": "import pkg.util\n",
        "test_alias.py": "from pkg.util import pad as p  # comment\n",
        "test_unrelated.py": "from pkg import other\nimport utility\n# from pkg.util import pad\n",
        "helper.py": "from pkg.util import pad\n",   # not a test file
    }
    for name, text in files.items():
        (tests / name).write_text(text)
    found = candidate_test_files(str(module), module.read_text(), str(tmp_path))
    assert found == [str(named), str(tests / "deep" / "test_output.py"), str(tests / "test_alias.py"), str(tests / "test_api.py")]
    (tests / "test_unrelated.py").write_text("from pkg.util import pad\n")   # edited: read again
    assert str(tests / "test_unrelated.py") in candidate_test_files(str(module), module.read_text(), str(tmp_path))


def test_a_package_is_imported_by_its_own_names_not_by_its_submodules(tmp_path):
    from lsp_server.discovery import candidate_test_files, imported_names

    assert imported_names("from a.b import c as d\nimport e") == {"from:a.b", "a.b.c", "e"}
    init = tmp_path / "pkg" / "__init__.py"
    init.parent.mkdir()
    init.write_text("def top():\n    return 1\n")
    (init.parent / "sub.py").write_text("")
    (init.parent / "nested").mkdir()
    tests = tmp_path / "tests"
    tests.mkdir()
    texts = {"test_a.py": "from pkg import top\n", "test_b.py": "import pkg\n", "test_c.py": "from pkg import sub, nested\n",
             "test_d.py": "import pkg.sub\n", "test_e.py": "from pkg.sub import thing\n"}
    for name, text in texts.items():
        (tests / name).write_text(text)
    assert candidate_test_files(str(init), init.read_text(), str(tmp_path)) == [str(tests / "test_a.py"), str(tests / "test_b.py")]
    sub = init.parent / "sub.py"
    assert candidate_test_files(str(sub), "", str(tmp_path)) == [str(tests / n) for n in ("test_c.py", "test_d.py", "test_e.py")]
