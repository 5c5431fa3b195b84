"""Verdicts that the candidate program cannot forge.

A test that is a single ``assert EXPR`` is split into a trusted *skeleton* evaluated here, on the
host, and *leaves* evaluated inside the sandbox. Skeleton nodes: comparisons (all operators),
``and``/``or``, ``not``/``-``/``+``, literal constants and containers, arithmetic between literals,
and calls to a small allowlist of pure builtins (``set``, ``sorted``, ``len``, ``round``,
``math.isclose(..., rel_tol=...)`` ...). Every other maximal sub-expression (typically the call of
the candidate function) is a leaf. The sandbox returns each leaf's value serialised as plain
builtin data (exact builtin types only; see ``encode``/``decode`` in sandbox_worker.py and here),
so an object whose ``__eq__`` always returns True, a patched ``math.isclose`` or a forged message
cannot make a test pass: the comparison happens here, on real Python values, and literal expected
values never enter the sandbox. An expected value that is itself a leaf (``math.pi``, ``g(16)``,
a constant of the setup) is computed in the sandbox after the program ran, where Python and pytest
compute it too: a program that changes what it computes (``math.pi = 3``) changes the verdict here
as it would under pytest.

Tests that are not a single assert (``check(f)``, a pytest-style body) run as a whole in the
sandbox and pass iff they raise nothing. They are less forge-proof: code that has taken over the
sandboxed process could fake a clean exit.
"""

from __future__ import annotations

import ast
import math
import operator
import reprlib
from dataclasses import dataclass
from functools import lru_cache

from engine.execution import values

# Pure functions the host may apply to leaf values; the value says whether the function iterates
# its first argument (then a generator or other iterable leaf is materialised as a list in the
# sandbox, as the real call would have done).
ALLOWED_CALLS = {
    "set": True, "frozenset": True, "sorted": True, "list": True, "tuple": True, "sum": True,
    "min": True, "max": True, "len": False, "abs": False, "round": False, "str": False,
    "int": False, "float": False, "bool": False, "math.isclose": False,
}
# Keyword arguments allowed per function (values must be host-evaluable constants).
ALLOWED_KEYWORDS = {
    "sorted": {"reverse"}, "sum": {"start"}, "int": {"base"}, "math.isclose": {"rel_tol", "abs_tol"},
    "min": {"default"}, "max": {"default"},
}
_FUNCTIONS = {
    "set": set, "frozenset": frozenset, "sorted": sorted, "list": list, "tuple": tuple, "sum": sum,
    "min": min, "max": max, "len": len, "abs": abs, "round": round, "str": str, "int": int,
    "float": float, "bool": bool, "math.isclose": math.isclose,
}
_COMPARE = {
    ast.Eq: (operator.eq, "=="), ast.NotEq: (operator.ne, "!="), ast.Lt: (operator.lt, "<"),
    ast.LtE: (operator.le, "<="), ast.Gt: (operator.gt, ">"), ast.GtE: (operator.ge, ">="),
    ast.Is: (operator.is_, "is"), ast.IsNot: (operator.is_not, "is not"),
    ast.In: (lambda a, b: a in b, "in"), ast.NotIn: (lambda a, b: a not in b, "not in"),
}
_ARITHMETIC = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
# Caps on what the host agrees to rebuild / compute (the values come from untrusted code).
MAX_NODES = 200_000
MAX_DEPTH = 100
MAX_TEXT = 4 << 20  # characters/bytes over all strings of one value
MAX_INT_BITS = 1 << 17
MAX_SEQUENCE = 1 << 20  # elements/characters produced by host-side arithmetic on literals


@dataclass(frozen=True)
class Leaf:
    """A sub-expression of the test evaluated in the sandbox."""

    source: str  # the exact source text of the expression
    line: int  # 1-based line of the test where it starts (keeps trace line numbers right)
    iterate: bool = False  # the skeleton iterates it: send list(value) when it is not plain data
    truth: bool = False  # only its truth is tested (`assert f(x)`, `not`, `and`): bool(value) will do


@dataclass(frozen=True)
class Plan:
    """How one test is run: ``kind`` "assert" (skeleton + leaves) or "block" (whole, in the sandbox)."""

    test: str
    kind: str
    leaves: tuple[Leaf, ...] = ()
    skeleton: tuple | None = None  # nested tuples, see _build
    error: str = ""  # the test itself cannot run (syntax error): the reason


class _Unsupported(Exception):
    """A node that is not part of the skeleton language."""


# ---------------------------------------------------------------------------------------------
# Splitting a test
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def plan_test(test: str, shadowed: frozenset[str] = frozenset()) -> Plan:
    """Split ``test`` into a skeleton and leaves when it is one assert statement.

    ``shadowed`` lists names the program (or setup) binds at top level: an allowlisted call whose
    name the program redefines (``def max(...)``) must run in the sandbox, as it would in Python.
    """
    try:
        tree = ast.parse(test, "<test>", "exec")
    except (SyntaxError, ValueError) as error:
        return Plan(test, "block", error=_syntax_message(error, "test"))
    except (RecursionError, MemoryError):
        return Plan(test, "block", error="SyntaxError: the test is too deeply nested")
    if not tree.body:
        return Plan(test, "block", error="the test is empty")
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return Plan(test, "block")
    leaves: list[Leaf] = []
    try:
        skeleton = _Builder(test, shadowed, leaves).build(tree.body[0].test, iterate=False, truth=True)
    except RecursionError:
        return Plan(test, "block")
    return Plan(test, "assert", tuple(leaves), skeleton)


@lru_cache(maxsize=1024)
def top_level_names(source: str) -> frozenset[str]:
    """Names a module binds at top level (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            bound = node.asname or node.name.split(".")[0]
            if not (node.name == "math" and bound == "math"):
                names.add(bound)
        elif isinstance(node, ast.Global):
            names.update(node.names)
    return frozenset(names)


class _Builder:
    """AST -> skeleton tuples. Node shapes:
    ("leaf", i) ("const", v) ("list"|"tuple"|"set", [n]) ("dict", [(k, v)]) ("compare", left, [(op, n)])
    ("and"|"or", [n]) ("not"|"neg"|"pos", n) ("call", name, [n], {kw: n}) ("binop", op, a, b)."""

    def __init__(self, test: str, shadowed: frozenset[str], leaves: list[Leaf]):
        self.test, self.shadowed, self.leaves = test, shadowed, leaves

    def build(self, node: ast.expr, iterate: bool, truth: bool = False) -> tuple:
        try:
            return self._skeleton(node, truth)
        except _Unsupported:
            return self._leaf(node, iterate, truth)

    def _leaf(self, node: ast.expr, iterate: bool, truth: bool) -> tuple:
        source = ast.get_source_segment(self.test, node)
        if source is None:  # pragma: no cover - parse trees from text always have positions
            raise _Unsupported
        self.leaves.append(Leaf(source, node.lineno, iterate, truth))
        return ("leaf", len(self.leaves) - 1)

    def _skeleton(self, node: ast.expr, truth: bool = False) -> tuple:
        if isinstance(node, ast.Constant):
            return ("const", node.value)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and not any(isinstance(e, ast.Starred) for e in node.elts):
            kind = {ast.List: "list", ast.Tuple: "tuple", ast.Set: "set"}[type(node)]
            return (kind, [self.build(e, False) for e in node.elts])
        if isinstance(node, ast.Dict) and None not in node.keys:
            return ("dict", [(self.build(k, False), self.build(v, False)) for k, v in zip(node.keys, node.values)])
        if isinstance(node, ast.Compare):
            left = self.build(node.left, False)
            return ("compare", left, [(type(op), self.build(c, False)) for op, c in zip(node.ops, node.comparators)])
        if isinstance(node, ast.BoolOp):
            return ("and" if isinstance(node.op, ast.And) else "or", [self.build(v, False, truth) for v in node.values])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            kind = {ast.Not: "not", ast.USub: "neg", ast.UAdd: "pos"}[type(node.op)]
            return (kind, self.build(node.operand, False, kind == "not"))
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC and _is_literal(node):
            # Only between literals (`[0] * 5`, `1 / 3`): keeps expected values out of the sandbox.
            return ("binop", type(node.op), self._skeleton(node.left), self._skeleton(node.right))
        if isinstance(node, ast.Call):
            return self._call(node)
        raise _Unsupported

    def _call(self, node: ast.Call) -> tuple:
        name = _call_name(node.func)
        if name not in ALLOWED_CALLS or name.split(".")[0] in self.shadowed:
            raise _Unsupported
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _Unsupported
        allowed = ALLOWED_KEYWORDS.get(name, set())
        keywords = {}
        for keyword in node.keywords:
            if keyword.arg not in allowed or not _is_literal(keyword.value):
                raise _Unsupported
            keywords[keyword.arg] = self._skeleton(keyword.value)
        iterate_first = ALLOWED_CALLS[name] and len(node.args) == 1
        args = [self.build(a, iterate_first and i == 0) for i, a in enumerate(node.args)]
        return ("call", name, args, keywords)


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


def _is_literal(node: ast.expr) -> bool:
    """Constants, literal containers of constants, and + - * / // % ** and unary -/+ between them."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return None not in node.keys and all(_is_literal(n) for n in (*node.keys, *node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _is_literal(node.left) and _is_literal(node.right)
    return False


# ---------------------------------------------------------------------------------------------
# Values crossing the sandbox boundary
# ---------------------------------------------------------------------------------------------


class BadValue(Exception):
    """Serialised data that does not describe a plain value (or exceeds the caps)."""


def decode(data, _budget: list | None = None, _depth: int = 0):
    """Rebuild a plain Python value from the tagged JSON form the sandbox sends.

    Tags: ["n"] None, ["b", bool], ["i", hex], ["f", float.hex], ["c", hex, hex], ["s", str],
    ["y", hex bytes], ["l"|"t"|"S"|"F", [items]] list/tuple/set/frozenset, ["d", [[k, v]...]]."""
    budget = _budget if _budget is not None else [MAX_NODES, MAX_TEXT]
    budget[0] -= 1
    if budget[0] < 0 or _depth > MAX_DEPTH:
        raise BadValue("the value is too large to compare outside the sandbox")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise BadValue("malformed value")
    tag, rest = data[0], data[1:]
    try:
        if tag == "n" and not rest:
            return None
        if tag == "b" and len(rest) == 1 and isinstance(rest[0], bool):
            return rest[0]
        if tag == "i" and len(rest) == 1 and isinstance(rest[0], str) and len(rest[0]) <= MAX_INT_BITS // 4 + 4:
            return int(rest[0], 16)
        if tag == "f" and len(rest) == 1 and isinstance(rest[0], str) and len(rest[0]) < 40:
            return float.fromhex(rest[0])
        if tag == "c" and len(rest) == 2 and all(isinstance(p, str) and len(p) < 40 for p in rest):
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag in ("s", "y") and len(rest) == 1 and isinstance(rest[0], str):
            budget[1] -= len(rest[0])
            if budget[1] < 0:
                raise BadValue("the value is too large to compare outside the sandbox")
            return rest[0] if tag == "s" else bytes.fromhex(rest[0])
        if tag in ("l", "t", "S", "F") and len(rest) == 1 and isinstance(rest[0], list):
            items = [decode(item, budget, _depth + 1) for item in rest[0]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d" and len(rest) == 1 and isinstance(rest[0], list):
            pairs = rest[0]
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise BadValue("malformed value")
            return {decode(k, budget, _depth + 1): decode(v, budget, _depth + 1) for k, v in pairs}
        if tag in values.TAGS:
            inner = [decode(rest[-1], budget, _depth + 1)] if tag == "E" and len(rest) == 4 else []
            return values.decode_stdlib(tag, rest, *inner)
    except (ValueError, TypeError, OverflowError, ArithmeticError) as error:  # bad hex, unhashable key ...
        raise BadValue(f"malformed value ({error})") from None
    raise BadValue("malformed value")


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 12
_REPR.maxlevel = 4


def short_repr(value, limit: int = 200) -> str:
    """A bounded repr (reprlib keeps tuples as tuples and cuts long strings in the middle)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - host values are plain builtins; be safe anyway
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: dict | list | None) -> str:
    """["Type", "message", "program"|"test"|"", line] -> "Type: message (program line 4)"."""
    if not error:
        return "error"
    kind, message, file, line = (list(error) + ["", "", "", 0])[:4]
    text = f"{kind}: {message}" if message else str(kind)
    if file in ("program", "test") and isinstance(line, int) and line > 0:
        text += f" ({file} line {line})"
    return text[:400]


class _LeafRaised(Exception):
    def __init__(self, error):
        super().__init__()
        self.error = error


class _NotComparable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.message = message


def judge_assert(plan: Plan, leaves: list) -> tuple[str, str]:
    """Outcome and message of an assert test from the sandbox's leaf results.

    Each leaf result is ["value", tagged] | ["raise", [type, message, file, line]] |
    ["refused", message] | ["skipped"] (the run stopped before it)."""
    evaluator = _Evaluator(leaves)
    try:
        truth = bool(evaluator.eval(plan.skeleton))
    except _LeafRaised as raised:
        return "error", describe_error(raised.error)
    except _NotComparable as refused:
        return "fail", refused.message
    except RecursionError:
        return "error", "RecursionError: the value is too deeply nested to compare"
    except Exception as error:  # noqa: BLE001 - Python semantics: the comparison itself raised
        return "error", f"{type(error).__name__}: {str(error)[:300]} (test line 1)"
    if truth:
        return "pass", ""
    return "fail", _failure_message(plan.skeleton, evaluator)


class _Evaluator:
    def __init__(self, leaves: list):
        self.leaves = leaves
        self.values: dict[int, object] = {}
        self.cache: dict[int, object] = {}  # id(node) -> value, for the failure message

    def leaf(self, index: int):
        if index in self.values:
            return self.values[index]
        result = self.leaves[index] if index < len(self.leaves) else ["skipped"]
        kind = result[0] if isinstance(result, list) and result else ""
        if kind == "value":
            try:
                value = decode(result[1])
            except BadValue as error:
                raise _NotComparable(f"returned {error}") from None
        elif kind == "raise":
            raise _LeafRaised(result[1])
        elif kind == "refused":
            raise _NotComparable(str(result[1])[:300])
        else:
            raise _LeafRaised(["Error", "the test stopped before this expression was evaluated", "", 0])
        self.values[index] = value
        return value

    def eval(self, node: tuple):
        value = self._eval(node)
        self.cache[id(node)] = value
        return value

    def _eval(self, node: tuple):
        kind = node[0]
        if kind == "leaf":
            return self.leaf(node[1])
        if kind == "const":
            return node[1]
        if kind in ("list", "tuple", "set"):
            items = [self.eval(n) for n in node[1]]
            return {"list": list, "tuple": tuple, "set": set}[kind](items)
        if kind == "dict":
            return {self.eval(k): self.eval(v) for k, v in node[1]}
        if kind == "compare":
            left = self.eval(node[1])
            for op, right_node in node[2]:
                right = self.eval(right_node)
                if not _COMPARE[op][0](left, right):
                    return False
                left = right
            return True
        if kind == "and":
            value = True
            for n in node[1]:
                value = self.eval(n)
                if not value:
                    return value
            return value
        if kind == "or":
            value = False
            for n in node[1]:
                value = self.eval(n)
                if value:
                    return value
            return value
        if kind == "not":
            return not self.eval(node[1])
        if kind == "neg":
            return -self.eval(node[1])
        if kind == "pos":
            return +self.eval(node[1])
        if kind == "binop":
            return _safe_arithmetic(node[1], self.eval(node[2]), self.eval(node[3]))
        if kind == "call":
            args = [self.eval(n) for n in node[2]]
            keywords = {k: self.eval(n) for k, n in node[3].items()}
            return _safe_call(node[1], args, keywords)
        raise ValueError(f"unknown skeleton node {kind!r}")  # pragma: no cover


def _safe_arithmetic(op, left, right):
    """+-*/ // % on literals, refusing results too large to compute on the host."""
    def size(v):
        return len(v) if isinstance(v, (str, bytes, list, tuple)) else 0

    if op is ast.Mult and isinstance(left, int) != isinstance(right, int):
        count = left if isinstance(left, int) else right
        other = right if isinstance(left, int) else left
        if size(other) * max(count, 0) > MAX_SEQUENCE:
            raise ValueError("the expression is too large to evaluate")
    if op is ast.Mult and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ValueError("the expression is too large to evaluate")
    if op is ast.Pow and isinstance(left, int) and isinstance(right, int) and right > 0:
        if max(left.bit_length(), 1) * right > MAX_INT_BITS:
            raise ValueError("the expression is too large to evaluate")
    return _ARITHMETIC[op](left, right)


def _safe_call(name: str, args: list, keywords: dict):
    if name == "round" and len(args) > 1 and isinstance(args[1], int) and abs(args[1]) > 10_000:
        raise ValueError("round() ndigits too large to evaluate outside the sandbox")
    if name == "int" and args and isinstance(args[0], (str, bytes)) and len(args[0]) > 5000:
        raise ValueError("the string is too long to convert to int outside the sandbox")
    return _FUNCTIONS[name](*args, **keywords)


def _has_leaf(node: tuple) -> bool:
    kind = node[0]
    if kind == "leaf":
        return True
    if kind in ("list", "tuple", "set", "and", "or"):
        return any(_has_leaf(n) for n in node[1])
    if kind == "dict":
        return any(_has_leaf(k) or _has_leaf(v) for k, v in node[1])
    if kind in ("not", "neg", "pos"):
        return _has_leaf(node[1])
    if kind == "compare":
        return _has_leaf(node[1]) or any(_has_leaf(n) for _, n in node[2])
    if kind == "call":
        return any(_has_leaf(n) for n in node[2])
    return False


def _failure_message(node: tuple, ev: _Evaluator) -> str:
    kind = node[0]
    value = ev.cache.get(id(node))
    if kind == "compare":
        left_node = node[1]
        for op, right_node in node[2]:
            if id(right_node) not in ev.cache:
                break
            left, right = ev.cache.get(id(left_node)), ev.cache[id(right_node)]
            if not _COMPARE[op][0](left, right):
                symbol = _COMPARE[op][1]
                if not _has_leaf(left_node) and _has_leaf(right_node) and op in (ast.Eq, ast.NotEq):
                    left, right = right, left
                if op is ast.Eq:
                    return f"returned {short_repr(left)}, expected {short_repr(right)}"
                return f"returned {short_repr(left)}, expected {symbol} {short_repr(right)}"
            left_node = right_node
        return "assertion failed"
    if kind == "and":
        for n in node[1]:
            if id(n) in ev.cache and not ev.cache[id(n)]:
                return _failure_message(n, ev)
    if kind == "or" and node[1]:
        return _failure_message(node[1][-1], ev)
    if kind == "not":
        inner = ev.cache.get(id(node[1]))
        return f"returned {short_repr(inner)}, expected a false value"
    if kind == "call" and node[1] == "math.isclose" and len(node[2]) == 2:
        a, b = (ev.cache.get(id(n)) for n in node[2])
        tolerances = ", ".join(f"{k}={short_repr(ev.cache.get(id(n)))}" for k, n in node[3].items())
        return f"returned {short_repr(a)}, expected close to {short_repr(b)}" + (f" ({tolerances})" if tolerances else "")
    return f"returned {short_repr(value)}, expected a true value"


def judge_block(result: dict) -> tuple[str, str]:
    """A block test passes iff it raised nothing (``result["block"]`` is "ok" or an error list)."""
    block = result.get("block")
    if block == "ok":
        return "pass", ""
    if isinstance(block, list) and block:
        if block[0] == "AssertionError":
            return "fail", describe_error(block)
        return "error", describe_error(block)
    return "error", "exited without a result (os._exit/sys.exit?)"


def _syntax_message(error: Exception, file: str) -> str:
    line = getattr(error, "lineno", None) or 0
    message = getattr(error, "msg", None) or str(error)
    return describe_error([type(error).__name__, message, file, line])
