"""What happened when a program ran a test: the data the tracer records and the renderer reads.

Plain frozen dataclasses with a JSON-friendly dict form, because traces cross a process boundary
(sandbox -> host) and the language server caches them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Value:
    """A variable, argument or return value as the model will read it."""

    name: str
    repr: str
    type: str


@dataclass(frozen=True)
class TraceEvent:
    kind: str  # "call" | "line" | "return" | "exception" | "skip"
    file: str  # "program" | "test"
    line: int  # 1-based
    func: str  # "<module>" at top level
    depth: int  # call depth below the test (0 = the test itself)
    values: tuple[Value, ...] = ()  # call: arguments; line: variables changed (after the line ran); return: "return"
    exc_type: str = ""
    message: str = ""
    count: int = 0  # skip: executions of this line left out by loop compression

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "file": self.file, "line": self.line, "func": self.func, "depth": self.depth}
        if self.values:
            d["values"] = [[v.name, v.repr, v.type] for v in self.values]
        if self.exc_type:
            d["exc_type"] = self.exc_type
        if self.message:
            d["message"] = self.message
        if self.count:
            d["count"] = self.count
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TraceEvent":
        return cls(
            kind=str(d["kind"]),
            file=str(d.get("file", "program")),
            line=int(d.get("line", 0)),
            func=str(d.get("func", "<module>")),
            depth=int(d.get("depth", 0)),
            values=tuple(Value(str(n), str(r), str(t)) for n, r, t in d.get("values", ())),
            exc_type=str(d.get("exc_type", "")),
            message=str(d.get("message", "")),
            count=int(d.get("count", 0)),
        )


@dataclass
class Trace:
    events: list[TraceEvent] = field(default_factory=list)
    truncated: bool = False  # the event cap was hit; the final exception/return is still kept
    total_events: int = 0  # events seen before compression

    def to_dict(self) -> dict:
        return {
            "events": [e.to_dict() for e in self.events],
            "truncated": self.truncated,
            "total_events": self.total_events,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        return cls(
            events=[TraceEvent.from_dict(e) for e in d.get("events", ())],
            truncated=bool(d.get("truncated", False)),
            total_events=int(d.get("total_events", 0)),
        )

    def exception(self) -> TraceEvent | None:
        """The exception that ended the test, if any (the last exception event at depth 0 or below)."""
        for event in reversed(self.events):
            if event.kind == "exception":
                return event
        return None
