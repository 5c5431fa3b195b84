"""Parse a module with the project's own interpreter (stdlib only, any CPython 3.9+).

Run as `python -I -S outline_helper.py` with the module's text on stdin; prints one JSON object:
{"functions": [[name, def_line, end_line, docstring, docstring_line], ...]} (lines as in
lsp_server.diagnostics.FunctionSpan: def/end 0-based, docstring 1-based), or {"error": [message,
line, column]} when the text is not valid Python for this interpreter. Nothing is executed.
"""

from __future__ import annotations

import ast
import json
import sys


def outline(text):
    tree = ast.parse(text)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            doc_line = node.body[0].lineno if doc is not None else 0
            end = getattr(node, "end_lineno", None) or node.lineno
            found.append([node.name, node.lineno - 1, end - 1, doc, doc_line])
    found.sort(key=lambda item: item[1])
    return found


def main():
    text = sys.stdin.buffer.read().decode("utf-8", "replace")
    try:
        answer = {"functions": outline(text)}
    except SyntaxError as error:
        answer = {"error": [str(error.msg), error.lineno or 0, error.offset or 0]}
    except (ValueError, RecursionError, MemoryError) as error:
        answer = {"error": [str(error), 0, 0]}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
