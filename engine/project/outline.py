"""A module's functions, parsed with the grammar of the Python that runs its tests.

The server parses with its own Python; a project may use a newer grammar (PEP 695 generics on
3.12) or an older one. When the project's interpreter is another version, the text is parsed by a
small stdlib helper (outline_helper.py) run in that interpreter, and the answer is cached by text.
That interpreter is the project's, so untrusted: the helper runs in the tests' sandbox, with
`-I -S` and its source given on the command line (nothing of egcfg needs to be shown there),
through the runner engine/execution/interpreter.py registers (``use_runner``: this room may not
import execution). Without a runner the project's interpreter is not run at all: egcfg's own
grammar answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "outline_helper.py")
HELPER_SECONDS = 20.0
# runner(python, argv after the executable, stdin bytes, timeout seconds, sandbox level) -> its stdout,
# or None when it could not run; raises nothing but OSError/ValueError. Set by use_runner.
_RUNNER = None
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


@dataclass(frozen=True)
class FunctionOutline:
    name: str
    def_line: int        # 0-based
    end_line: int        # 0-based
    docstring: str | None
    docstring_line: int  # 1-based, 0 when none


def use_runner(runner) -> None:
    """How the helper runs the project's interpreter (engine/execution/interpreter.py registers its
    sandboxed run_confined when it is imported)."""
    global _RUNNER
    _RUNNER = runner


def same_grammar(version: tuple[int, ...] | None) -> bool:
    """Whether egcfg's own parser reads the same language as an interpreter of this version."""
    return version is None or tuple(version[:2]) == sys.version_info[:2]


def functions(text: str, python: str | None = None, version: tuple[int, ...] | None = None,
              sandbox: str = "auto") -> list[FunctionOutline]:
    """Every function of the module, nearest the top first; raises SyntaxError (msg, lineno) when the
    text is not valid Python for the interpreter `python` (egcfg's own when None or the same version).
    ``sandbox``: the level the helper runs in (auto | bubblewrap | landlock | limits), the tests' one."""
    if python is None or same_grammar(version):
        from engine.project import outline_helper

        rows = outline_helper.outline(text)
    else:
        rows = _outline_in(python, text, sandbox)
    return [FunctionOutline(*row) for row in rows]


def _outline_in(python: str, text: str, sandbox: str = "auto") -> list:
    key = (python, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    answer = _CACHE.get(key)
    if answer is None:
        answer = _run_helper(python, text, sandbox)
        _CACHE[key] = answer
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    if "error" in answer:
        message, line, column = answer["error"]
        error = SyntaxError(message)
        error.lineno, error.offset = line or None, column or None
        raise error
    return answer["functions"]


def _run_helper(python: str, text: str, sandbox: str = "auto") -> dict:
    from engine.errors import UserError

    runner = _RUNNER
    if runner is not None:
        try:
            with open(HELPER, encoding="utf-8") as handle:
                source = handle.read()
            output = runner(python, ["-I", "-S", "-c", source], text.encode("utf-8", "surrogatepass"),
                            HELPER_SECONDS, sandbox)
            answer = json.loads(output) if output is not None else None
            if _well_formed(answer):
                return answer
        except (OSError, ValueError, UserError):  # UserError: no sandbox can run it here
            pass
    # The helper could not run: fall back to egcfg's own grammar rather than show nothing.
    from engine.project import outline_helper

    try:
        return {"functions": outline_helper.outline(text)}
    except SyntaxError as error:
        return {"error": [str(error.msg), error.lineno or 0, error.offset or 0]}


def _well_formed(answer) -> bool:
    """Whether the helper's answer (from an untrusted interpreter) has the shape _outline_in expects."""
    if not isinstance(answer, dict):
        return False
    if "error" in answer:
        error = answer["error"]
        return (isinstance(error, list) and len(error) == 3 and isinstance(error[0], str)
                and all(type(v) is int for v in error[1:]))
    rows = answer.get("functions")
    return isinstance(rows, list) and all(
        isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
        and all(type(row[i]) is int for i in (1, 2, 4)) and (row[3] is None or isinstance(row[3], str))
        for row in rows)
