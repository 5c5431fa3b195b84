"""Benchmark loaders: MBPP, sanitized MBPP, HumanEval and their ET (extended tests) variants -> Task.

``data`` is a folder holding the files under their usual names, a file path, or ``hf:DATASET_ID``
(optionally ``hf:DATASET_ID:CONFIG``) for users with network access and the ``datasets`` package.
The same row converters serve every source, so a user's own download loads like the shipped copy.

What guidance may see and what scores are kept apart: ``tests`` are the public tests (MBPP's three
asserts; HumanEval's docstring examples), ``eval_tests`` score (HumanEval's hidden ``check()``),
``et_tests`` are the extended tests of the ET variants.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import re
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from engine.errors import UserError


@dataclass
class Task:
    task_id: str
    prompt: str  # MBPP: the text; HumanEval: signature + docstring
    entry_point: str
    reference: str  # complete reference program
    tests: list[str]  # tests guidance may use
    eval_tests: list[str]  # scoring tests
    setup: str = ""  # test_setup_code / imports the tests need
    et_tests: list[str] = field(default_factory=list)
    challenge_tests: list[str] = field(default_factory=list)  # MBPP's challenge_test_list


# --------------------------------------------------------------------------- finding and reading files

# Standard file names, first one preferred; the others are names the same data is commonly saved under.
FILE_NAMES = {
    "mbpp": ["mbpp.jsonl"],
    "mbpp-sanitized": ["sanitized-mbpp.json", "mbpp_sanitized.json", "sanitized-mbpp.jsonl"],
    "humaneval": ["HumanEval.jsonl.gz", "HumanEval.jsonl", "human-eval-v2-20210705.jsonl"],
    "humaneval-et": ["HumanEval_ET.jsonl", "HumanEval_ET.jsonl.gz"],
    "mbpp-et": ["MBPP_ET.jsonl", "MBPP_ET_partial.jsonl", "MBPP_ET.jsonl.gz"],
}
NAMES = tuple(FILE_NAMES)


def load_tasks(name: str, data: str | Path) -> list[Task]:
    """All tasks of data set ``name`` from ``data`` (folder, file or ``hf:ID[:CONFIG]``), in task order."""
    if name not in FILE_NAMES:
        raise UserError(f"unknown data set {name!r}; choose one of: {', '.join(NAMES)}")
    convert = _CONVERTERS[name]
    text = str(data)
    if text.startswith("hf:"):
        rows = _hub_rows(text[3:])
        source = text
    else:
        path = find_file(name, data)
        rows = read_rows(path)
        source = str(path)
    tasks = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"{source}: record {number} is not a JSON object")
        try:
            tasks.append(convert(row))
        except KeyError as missing:
            raise UserError(f"{source}: record {number} has no field {missing}; is this really {name} data?") from None
    if not tasks:
        raise UserError(f"{source} holds no tasks")
    return tasks


def find_file(name: str, data: str | Path) -> Path:
    """The data file: ``data`` itself, or the standard file of ``name`` inside the folder ``data``."""
    path = Path(data).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for file_name in FILE_NAMES[name]:
            if (path / file_name).is_file():
                return path / file_name
        raise UserError(f"{path} has no {name} file (looked for {', '.join(FILE_NAMES[name])})")
    raise UserError(f"{path} does not exist")


def read_rows(path: Path) -> list:
    """Records of a JSON array or JSON-lines file, gzipped or not (decided by content, not name)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} is not valid JSON ({error})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise UserError(f"{path} line {number} is not valid JSON ({error.msg})") from None
    return rows


def _hub_rows(spec: str) -> list[dict]:
    """Every row of every split of a hub data set (``ID`` or ``ID:CONFIG``), sorted by task id."""
    dataset_id, _, config = spec.partition(":")
    try:
        import datasets  # optional; not a dependency of egcfg
    except ImportError:
        raise UserError("loading from the hub needs the `datasets` package (pip install datasets); or pass a local file") from None
    try:
        loaded = datasets.load_dataset(dataset_id, config or None)
    except Exception as error:  # network, unknown id, offline mode: all end the same way for the user
        raise UserError(f"cannot load hub data set {spec!r}: {error}") from None
    rows = [dict(row) for split in loaded.values() for row in split]
    return sorted(rows, key=lambda row: _task_number(str(row.get("task_id", ""))) or 0)


# --------------------------------------------------------------------------- row converters


def _lines(code: str) -> str:
    """Source with plain newlines (MBPP ships CRLF)."""
    return code.replace("\r\n", "\n").replace("\r", "\n")


def _clean_tests(tests: Iterable[str]) -> list[str]:
    return [_lines(test).strip() for test in tests if test and test.strip()]


def _mbpp_task(row: dict) -> Task:
    reference = _lines(row["code"])
    tests = _clean_tests(row["test_list"])
    public = tests[:3]  # the ET files append their extended tests to MBPP's three
    return Task(
        task_id=str(row["task_id"]),
        prompt=row.get("text") or row.get("prompt") or "",
        entry_point=row.get("entry_point") or mbpp_entry_point(reference, public),
        reference=reference,
        tests=public,
        eval_tests=public,
        setup=_lines(row.get("test_setup_code") or ""),
        et_tests=tests if len(tests) > 3 else [],
        challenge_tests=_clean_tests(row.get("challenge_test_list") or []),
    )


def _mbpp_sanitized_task(row: dict) -> Task:
    reference = _lines(row["code"])
    tests = _clean_tests(row["test_list"])
    return Task(
        task_id=str(row["task_id"]),
        prompt=row.get("prompt") or row.get("text") or "",
        entry_point=mbpp_entry_point(reference, tests),
        reference=reference,
        tests=tests,
        eval_tests=tests,
        setup="\n".join(_lines(line).strip() for line in row.get("test_imports") or []),
    )


def _mbpp_et_task(row: dict) -> Task:
    task = _mbpp_task(row)
    if "test_case_list" in row:  # some ET releases keep the extended tests in a field of their own
        task.et_tests = _clean_tests(row["test_case_list"])
    elif not task.et_tests:
        task.et_tests = list(task.tests)
    return task


def _humaneval_task(row: dict) -> Task:
    prompt = _lines(row["prompt"])
    entry_point = row["entry_point"]
    eval_tests, check_setup = check_tests(_lines(row["test"]), entry_point)
    setup = "\n".join(dict.fromkeys(prompt_imports(prompt) + check_setup))
    return Task(
        task_id=str(row["task_id"]),
        prompt=prompt,
        entry_point=entry_point,
        reference=prompt + _lines(row["canonical_solution"]),
        tests=docstring_tests(prompt, entry_point),
        eval_tests=eval_tests,
        setup=setup,
    )


def _humaneval_et_task(row: dict) -> Task:
    task = _humaneval_task(row)
    task.et_tests = _clean_tests(row.get("test_case_list") or [])
    return task


_CONVERTERS: dict[str, Callable[[dict], Task]] = {
    "mbpp": _mbpp_task,
    "mbpp-sanitized": _mbpp_sanitized_task,
    "humaneval": _humaneval_task,
    "humaneval-et": _humaneval_et_task,
    "mbpp-et": _mbpp_et_task,
}


def _parse(source: str, mode: str = "exec"):
    """ast.parse without the DeprecationWarnings old benchmark code raises (invalid escapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source, mode=mode)


# --------------------------------------------------------------------------- MBPP helpers


def mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function the tests call: the first called name the code defines (MBPP has no such field)."""
    try:
        defined = [node.name for node in _parse(code).body if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        defined = []
    for test in tests:
        try:
            tree = _parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    return defined[-1] if defined else ""


# --------------------------------------------------------------------------- HumanEval helpers

# Statements check() may hold and still be split into one test per assert.
_SPLITTABLE = (ast.Assert, ast.Import, ast.ImportFrom)


def check_tests(test_source: str, entry_point: str) -> tuple[list[str], list[str]]:
    """HumanEval's ``check(candidate)`` as (tests, setup lines).

    When check() is only asserts (plus imports and no-op expressions), each assert becomes a test
    with ``candidate`` replaced by the entry point. Otherwise (loops, helper variables) the whole
    test module and ``check(ENTRY_POINT)`` form one block test, which keeps it correct.
    """
    block = [test_source.strip() + f"\n\n\ncheck({entry_point})"]
    try:
        module = _parse(test_source)
    except SyntaxError:
        return block, []
    checks = [node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        return block, []
    check = checks[0]
    parameter = check.args.args[0].arg
    statements = [node for node in check.body if not _is_no_op(node)]
    if not all(isinstance(node, _SPLITTABLE) for node in statements):
        return block, []
    tests, setup = [], []
    used_names = set()
    for node in statements:
        segment = ast.get_source_segment(test_source, node) or ""
        if isinstance(node, ast.Assert):
            tests.append(_rename(segment, parameter, entry_point))
            used_names |= {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}
        else:
            setup.append(segment)
    # module-level imports, and the assignments and helpers the asserts read (METADATA only if used)
    module_setup = []
    for node in module.body:
        if node is check:
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _binds(node) & used_names:
            module_setup.append(ast.get_source_segment(test_source, node) or "")
    return tests, module_setup + setup


def _binds(node: ast.stmt) -> set[str]:
    """Names a module-level assignment, function or class statement defines."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
    return set()


def _is_no_op(node: ast.stmt) -> bool:
    """A bare constant or name (HumanEval/129's stray ``print``): evaluating it does nothing."""
    return isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.Name)))


def _rename(source: str, old: str, new: str) -> str:
    """``source`` with every NAME token ``old`` replaced (strings and comments untouched)."""
    lines = source.split("\n")
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.NAME and t.string == old]
    for token in reversed(tokens):  # right to left so earlier columns stay valid
        row, column = token.start[0] - 1, token.start[1]
        lines[row] = lines[row][:column] + new + lines[row][column + len(old) :]
    return "\n".join(lines)


def prompt_imports(prompt: str) -> list[str]:
    """The import statements at the top level of a HumanEval prompt (the tests may need them too)."""
    try:
        module = _parse(prompt)
    except SyntaxError:
        return [line.strip() for line in prompt.splitlines() if re.match(r"(import|from)\s+\w", line)]
    return [ast.get_source_segment(prompt, node) or "" for node in module.body if isinstance(node, (ast.Import, ast.ImportFrom))]


# Words between an example call and its expected value: "=>", "==>", "->", "➞", "==", "=",
# "returns", "should return", "# =>" ...
_SEPARATOR = re.compile(r"^\s*(?:#\s*)?(?:==>|=>|->|➞|==|=|returns?|should\s+return|will\s+return|gives?|outputs?)\s*:?\s*", re.I)


def docstring_tests(prompt: str, entry_point: str) -> list[str]:
    """The examples in the docstring as asserts: doctest style (``>>> f(x)`` then the output line)
    and prose style (``f(x) ==> y``, ``f(x) -> y``, ``f(x) should return y``...). Examples whose
    call or expected value mentions anything but literals and the entry point are left out."""
    docstring = _docstring(prompt, entry_point)
    tests = []
    for source, want in _doctest_examples(docstring):
        test = _doctest_assert(source, want, entry_point)
        if test:
            tests.append(test)
    lines = docstring.splitlines()
    # Prose before an "Example" heading describes the function (HumanEval/130 defines its recurrence
    # as "tri(1) = 3"); when there is such a heading, only what follows it holds examples.
    heading = next((i for i, line in enumerate(lines) if re.search(r"\bexamples?\b|>>>", line, re.I)), 0)
    for line in lines[heading:]:
        stripped = line.strip()
        if stripped.startswith("..."):
            continue
        # ">>> f(x) == y" with no output line reads like prose once the prompt is gone
        test = _prose_assert(stripped.removeprefix(">>>"), entry_point)
        if test:
            tests.append(test)
    tests += _input_output_asserts(docstring, entry_point, _parameters(prompt, entry_point))
    return list(dict.fromkeys(tests))


# "For lst = [1,2,3] the output should be 14", "For s = "ab", c = "b" the result should be ('a',False)"
_FOR_EXAMPLE = re.compile(r"^\s*for\s+(.+?)\s*,?\s+the\s+(?:output|result|answer)\s+(?:should\s+be|is|will\s+be)\s+(.+)$", re.I)


def _input_output_asserts(docstring: str, entry_point: str, parameters: list[str]) -> list[str]:
    """Examples written as arguments and a result: "For x = 1 the output should be 2", or an
    "Input: ..." line followed by an "Output: ..." line."""
    tests = []
    lines = [line.strip() for line in docstring.splitlines()]
    for index, line in enumerate(lines):
        match = _FOR_EXAMPLE.match(line)
        if match:
            arguments, result = match.group(1), match.group(2)
        elif line.lower().startswith("input:") and index + 1 < len(lines) and lines[index + 1].lower().startswith("output:"):
            arguments, result = line[6:], lines[index + 1][7:]
        else:
            continue
        call = _call_from_arguments(arguments.strip(), entry_point, parameters)
        expected = _longest_expression(result)
        if call and expected is not None:
            tests.append(f"assert {call} == {expected}")
    return tests


def _call_from_arguments(arguments: str, entry_point: str, parameters: list[str]) -> str | None:
    """``"s = 'ab', c = 'b'"`` or ``"[1, 2]"`` (one parameter) -> ``"f('ab', 'b')"``."""
    call = _expression(f"{entry_point}({arguments})")
    if not isinstance(call, ast.Call) or not _is_literal_call(call, entry_point):
        return None
    if call.keywords and not call.args:
        by_name = {keyword.arg: keyword.value for keyword in call.keywords}
        if sorted(by_name) != sorted(parameters):
            return None
        values = [by_name[name] for name in parameters]
    elif call.args and not call.keywords and len(call.args) == len(parameters) == 1:
        values = call.args
    else:
        return None
    source = f"{entry_point}({arguments})"
    return f"{entry_point}(" + ", ".join(ast.get_source_segment(source, value) or "" for value in values) + ")"


def _parameters(prompt: str, entry_point: str) -> list[str]:
    function = _function(prompt, entry_point)
    return [argument.arg for argument in function.args.args] if function else []


def _doctest_examples(docstring: str) -> list[tuple[str, str]]:
    """(source, expected output) of each ``>>>`` example; doctest's own parser rejects the uneven
    indentation some docstrings have, so this one is lenient."""
    lines = [line.strip() for line in docstring.splitlines()]
    examples = []
    index = 0
    while index < len(lines):
        if not lines[index].startswith(">>>"):
            index += 1
            continue
        source = [lines[index][3:].strip()]
        index += 1
        while index < len(lines) and lines[index].startswith("..."):
            source.append(lines[index][3:].strip())
            index += 1
        want = []
        while index < len(lines) and lines[index] and not lines[index].startswith(">>>"):
            want.append(lines[index])
            index += 1
        examples.append(("\n".join(source), "\n".join(want)))
    return examples


def _function(prompt: str, entry_point: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        module = _parse(prompt)
    except SyntaxError:
        return None
    for node in ast.walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return node
    return None


def _docstring(prompt: str, entry_point: str) -> str:
    function = _function(prompt, entry_point)
    if function is None:
        return prompt  # a prompt that does not parse: look for examples in all of it
    return ast.get_docstring(function, clean=True) or ""


def _doctest_assert(source: str, want: str, entry_point: str) -> str | None:
    if not want or "\n" in want or "\n" in source:
        return None
    call = _expression(source)
    expected = _expression(want)
    if call is None or expected is None or not _calls_entry_point(call, entry_point) or not _is_literal(expected):
        return None
    if isinstance(call, ast.Compare) and expected_value(expected) is True:
        return f"assert {source}"
    return f"assert {source} == {want}"


def _prose_assert(line: str, entry_point: str) -> str | None:
    match = re.search(rf"(?<![\w.]){re.escape(entry_point)}\s*\(", line)
    if not match:
        return None
    start = match.start()
    # the call ends at the first ")" that closes a parseable call
    for end in (i + 1 for i, char in enumerate(line) if char == ")" and i > start):
        call_text = line[start:end]
        call = _expression(call_text)
        if isinstance(call, ast.Call) and _is_literal_call(call, entry_point):
            break
    else:
        return None
    rest = line[end:]
    separator = _SEPARATOR.match(rest)
    if not separator or not separator.group(0).strip():
        return None
    expected_text = _longest_expression(rest[separator.end() :])
    if expected_text is None:
        return None
    return f"assert {call_text} == {expected_text}"


def _longest_expression(text: str) -> str | None:
    """The longest literal expression at the start of ``text`` (prose may follow it)."""
    text = text.strip()
    if re.fullmatch(r"(true|false|none)\.?", text, re.I):  # prose spelling of the constants
        return text.rstrip(".").capitalize()
    for end in range(len(text), 0, -1):
        candidate = text[:end].rstrip()
        if not candidate or candidate.endswith("."):  # a full stop ends the sentence, not a float
            continue
        if re.match(r"[\w'\"]", text[end:end + 1]):
            continue  # the literal runs on into other text: `""aaaaaaa"` is not the empty string
        tree = _expression(candidate)
        if tree is not None and _is_literal(tree):
            return ast.get_source_segment(candidate, tree) or candidate
    return None


def _expression(text: str) -> ast.expr | None:
    try:
        return _parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return None


def _is_literal(node: ast.expr) -> bool:
    """Built only from constants, containers and operators: no names, no calls."""
    allowed = (ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp, ast.unaryop, ast.operator, ast.Load)
    return all(isinstance(sub, allowed) for sub in ast.walk(node))


def _is_literal_call(call: ast.Call, entry_point: str) -> bool:
    return (
        isinstance(call.func, ast.Name)
        and call.func.id == entry_point
        and all(_is_literal(arg) for arg in call.args)
        and all(_is_literal(keyword.value) for keyword in call.keywords)
    )


def _calls_entry_point(node: ast.expr, entry_point: str) -> bool:
    """``node`` calls the entry point with literal arguments and uses no other name."""
    names = [sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)]
    calls = [sub for sub in ast.walk(node) if isinstance(sub, ast.Call)]
    return bool(calls) and set(names) == {entry_point} and all(_is_literal_call(call, entry_point) for call in calls)


def expected_value(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


# --------------------------------------------------------------------------- --tasks RANGE


def parse_task_range(spec: str) -> list[tuple[int, int]]:
    """``"11-510"`` or ``"11-20,30"`` -> inclusive (first, last) pairs of task numbers."""
    ranges = []
    for part in spec.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not match:
            raise UserError(f"bad --tasks {spec!r}: use numbers and ranges like 11-510 or 11-20,30")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if last < first:
            raise UserError(f"bad --tasks {spec!r}: range {part} runs backwards")
        ranges.append((first, last))
    return ranges


def _task_number(task_id: str) -> int | None:
    """The number in ``"11"`` or ``"HumanEval/11"``."""
    match = re.search(r"(\d+)\s*$", task_id)
    return int(match.group(1)) if match else None


def select_tasks(tasks: list[Task], spec: str | None) -> list[Task]:
    """The tasks whose number falls in ``spec`` (all of them when ``spec`` is empty)."""
    if not spec:
        return tasks
    ranges = parse_task_range(spec)
    chosen = [task for task in tasks if (number := _task_number(task.task_id)) is not None and any(a <= number <= b for a, b in ranges)]
    if not chosen:
        raise UserError(f"no task matches --tasks {spec}")
    return chosen
