"""A module's functions, parsed with the grammar of the Python that runs its tests.

The server parses with its own Python; a project may use a newer grammar (PEP 695 generics on
3.12) or an older one. When the project's interpreter is another version, the text is parsed by a
small stdlib helper (outline_helper.py) run in that interpreter, and the answer is cached by text.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "outline_helper.py")
HELPER_SECONDS = 20.0
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


@dataclass(frozen=True)
class FunctionOutline:
    name: str
    def_line: int        # 0-based
    end_line: int        # 0-based
    docstring: str | None
    docstring_line: int  # 1-based, 0 when none


def same_grammar(version: tuple[int, ...] | None) -> bool:
    """Whether egcfg's own parser reads the same language as an interpreter of this version."""
    return version is None or tuple(version[:2]) == sys.version_info[:2]


def functions(text: str, python: str | None = None, version: tuple[int, ...] | None = None) -> list[FunctionOutline]:
    """Every function of the module, nearest the top first; raises SyntaxError (msg, lineno) when the
    text is not valid Python for the interpreter `python` (egcfg's own when None or the same version)."""
    if python is None or same_grammar(version):
        from engine.project import outline_helper

        rows = outline_helper.outline(text)
    else:
        rows = _outline_in(python, text)
    return [FunctionOutline(*row) for row in rows]


def _outline_in(python: str, text: str) -> list:
    key = (python, hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest())
    answer = _CACHE.get(key)
    if answer is None:
        answer = _run_helper(python, text)
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


def _run_helper(python: str, text: str) -> dict:
    try:
        done = subprocess.run([python, "-I", "-S", HELPER], input=text.encode("utf-8", "surrogatepass"),
                              capture_output=True, timeout=HELPER_SECONDS)
        answer = json.loads(done.stdout)
        if isinstance(answer, dict) and ("functions" in answer or "error" in answer):
            return answer
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    # The helper could not run: fall back to egcfg's own grammar rather than show nothing.
    from engine.project import outline_helper

    try:
        return {"functions": outline_helper.outline(text)}
    except SyntaxError as error:
        return {"error": [str(error.msg), error.lineno or 0, error.offset or 0]}
