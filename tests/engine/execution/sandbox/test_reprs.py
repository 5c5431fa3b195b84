"""Bounded reprs (engine/execution/sandbox/reprs.py): short, safe text for any value, without running
the traced program's own __repr__."""

from __future__ import annotations

from engine.execution.sandbox.reprs import bounded_repr


def test_bounded_reprs():
    assert bounded_repr("a" * 1000) == repr("a" * 40)[:-1] + "..." + repr("a" * 20)[1:]
    assert len(bounded_repr("a" * 1000)) < 80
    assert bounded_repr(list(range(100))) == "[0, 1, 2, 3, 4, 5, ...92 more..., 98, 99]"
    assert bounded_repr(tuple(range(9))) == "(0, 1, 2, 3, 4, 5, ...1 more..., 7, 8)"
    assert bounded_repr({i: i for i in range(10)}) == "{0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, ...2 more}"
    assert bounded_repr([[[1]]]) == "[[[...1 items]]]"
    assert bounded_repr(10**5000).startswith("<int with about 50")
    assert bounded_repr(2**70) == str(2**70)
    recursive: list = []
    recursive.append(recursive)
    assert bounded_repr(recursive) == "[[[...1 items]]]"
    from collections import Counter, OrderedDict, defaultdict, deque

    assert bounded_repr(Counter("aab")) == "Counter({'a': 2, 'b': 1})"
    assert bounded_repr(deque([1, 2])) == "deque([1, 2])"
    assert bounded_repr(defaultdict(int, {1: 2})) == "defaultdict({1: 2})"
    assert bounded_repr(OrderedDict(a=1)) == "OrderedDict({'a': 1})"
    assert bounded_repr(b"xy") == "b'xy'"
    assert bounded_repr(len) == "<function len>"


def test_namedtuples_dataclasses_and_enums():
    from collections import namedtuple
    from dataclasses import dataclass
    import enum

    Point = namedtuple("Point", "x y")

    @dataclass
    class Box:
        size: int
        items: list

    class Color(enum.Enum):
        RED = 1

    assert bounded_repr(Point(1, (2,))) == "Point(x=1, y=(2,))"
    assert bounded_repr(Box(3, list(range(50)))) == "Box(size=3, items=[0, 1, 2, 3, 4, 5, ...42 more..., 48, 49])"
    assert bounded_repr(Color.RED) == "<Color.RED: 1>"


def test_program_subclasses_of_containers_show_their_items():
    g: dict = {}
    exec(compile("class Stack(list):\n    def __repr__(self):\n        raise ValueError\n", "<program>", "exec"), g)
    assert bounded_repr(g["Stack"]([1, 2]), {"<program>"}) == "Stack([1, 2])"


def test_library_reprs_that_raise_or_are_huge_are_contained():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Huge:
        def __repr__(self):
            return "x" * 100_000

    assert bounded_repr(Broken()) == "<Broken object>"
    assert len(bounded_repr(Huge())) <= 160
    assert bounded_repr([Broken()]) == "[<Broken object>]"
