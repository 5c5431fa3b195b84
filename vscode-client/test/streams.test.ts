import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { StreamRegistry, bodyToInsertText, type CompletionLine } from "../src/streams";

const uri = "file:///work/add.py";
const at = { line: 2, character: 4 };

function line(lineNo: number, body: string, extra: Partial<CompletionLine> = {}): CompletionLine {
  return {
    requestId: "run-1",
    uri,
    version: 1,
    position: at,
    lineNo,
    text: body.split("\n").filter(Boolean).pop() ?? "",
    code: `def add(a, b):\n${body}`,
    body,
    agent: "instruct/g0",
    engineTime: 0.1,
    ...extra,
  };
}

describe("bodyToInsertText", () => {
  it("drops trailing whitespace so the ghost text ends on code", () => {
    assert.equal(bodyToInsertText("    x = 1\n    return x\n\n"), "    x = 1\n    return x");
    assert.equal(bodyToInsertText("\n  \n"), "");
  });
});

describe("StreamRegistry", () => {
  it("grows line by line and asks for a re-trigger only when a line is added", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    assert.deepEqual(stream.start, { line: 2, character: 0 }, "anchored at the start of the cursor's line");
    assert.equal(streams.addLine(line(1, "    total = a + b\n")), stream);
    // the same line again: nothing new to show, no re-trigger
    assert.equal(streams.addLine(line(1, "    total = a + b\n")), undefined);
    assert.equal(streams.addLine(line(2, "    total = a + b\n    return total\n")), stream);
    assert.equal(stream.insertText, "    total = a + b\n    return total");
    assert.equal(stream.lines, 2);
  });

  it("uses `body`, not the whole program in `code`", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    streams.addLine(line(1, "    x = a\n"));
    assert.equal(stream.insertText, "    x = a");
    // an older server without `body`: `code` is all there is
    const { body: _body, ...withoutBody } = line(2, "");
    streams.addLine({ ...withoutBody, code: "    x = a\n    return x\n" });
    assert.equal(stream.insertText, "    x = a\n    return x");
  });

  it("follows the first agent when several stream at once", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    const from = (agent: string, lineNo: number, body: string) => line(lineNo, body, { agent });
    assert.equal(streams.addLine(from("g0", 1, "    x = a")), stream);
    assert.equal(streams.addLine(from("g3", 1, "    y = b")), undefined);
    assert.equal(streams.addLine(from("g3", 2, "    y = b\n    return y")), undefined);
    assert.equal(stream.insertText, "    x = a");
    assert.equal(streams.addLine(from("g0", 2, "    x = a\n    return x")), stream);
    assert.equal(stream.finish("    y = b\n    return y\n"), true, "the final answer may come from another agent");
    assert.equal(stream.insertText, "    y = b\n    return y");
  });

  it("ignores lines for another position, version or document, or a replaced stream", () => {
    const streams = new StreamRegistry();
    const old = streams.start(uri, at, 1);
    const current = streams.start(uri, { line: 5, character: 4 }, 3);
    assert.equal(old.state, "cancelled");
    const there = { position: { line: 5, character: 4 }, version: 3 };
    assert.equal(streams.addLine(line(1, "    x = 1")), undefined, "old position");
    assert.equal(streams.addLine(line(1, "    x = 1", { ...there, uri: "file:///other.py" })), undefined);
    assert.equal(streams.addLine(line(1, "    x = 1", { ...there, version: 2 })), undefined, "older version");
    assert.equal(current.insertText, "");
    assert.equal(streams.addLine(line(1, "    x = 1", there)), current);
  });

  it("answers from the buffer while the user types through the suggestion", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    streams.addLine(line(2, "    total = a + b\n    return total\n"));
    assert.deepEqual(stream.suggestionAt(at, "    "), {
      insertText: "    total = a + b\n    return total",
      start: { line: 2, character: 0 },
      end: at,
    });
    // one line accepted: the rest is still offered from the new cursor
    const cursor = { line: 3, character: 4 };
    assert.equal(stream.suggestionAt(cursor, "    total = a + b\n    ")?.insertText, "    total = a + b\n    return total");
    // diverged, fully accepted, or cursor before the anchor: nothing
    assert.equal(stream.suggestionAt(cursor, "    total = a - b\n    "), undefined);
    assert.equal(stream.suggestionAt({ line: 3, character: 16 }, "    total = a + b\n    return total"), undefined);
    assert.equal(stream.suggestionAt({ line: 1, character: 0 }, ""), undefined);
  });

  it("takes the final answer with its range start, then stops taking lines", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    streams.addLine(line(1, "    x = a\n"));
    assert.equal(stream.finish("    return a + b\n", { line: 2, character: 0 }), true);
    assert.equal(stream.state, "done");
    assert.equal(stream.insertText, "    return a + b");
    assert.equal(streams.addLine(line(2, "    x = a\n    y = b\n")), undefined);
    assert.equal(stream.finish("    return a + b"), false, "same answer again: no change");
    assert.equal(stream.finish("    return a + b", { line: 1, character: 0 }), true, "another range start is a change");
    assert.deepEqual(stream.start, { line: 1, character: 0 });
  });

  it("offers nothing once cancelled or dropped", () => {
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    streams.addLine(line(1, "    x = 1"));
    streams.drop(uri);
    assert.equal(stream.state, "cancelled");
    assert.equal(stream.suggestionAt(at, "    "), undefined);
    assert.equal(streams.get(uri), undefined);
    assert.equal(stream.finish("    x = 2"), false);
    assert.deepEqual(streams.running(), []);
  });

  it("drops only the stream it was asked to drop", () => {
    const streams = new StreamRegistry();
    const old = streams.start(uri, at, 1);
    const current = streams.start(uri, at, 2);
    streams.drop(uri, old);
    assert.equal(streams.get(uri), current);
    assert.deepEqual(streams.running(), [current]);
  });

  it("offers the rest after VS Code's accept-next-line inserted the first line", () => {
    // editor.action.inlineSuggest.acceptNextLine inserts the first line and its newline, then asks
    // the provider again at the next line: the buffer must still offer the rest of the body
    const streams = new StreamRegistry();
    const stream = streams.start(uri, at, 1);
    streams.addLine(line(1, "    total = a + b\n"));
    streams.addLine(line(2, "    total = a + b\n    return total\n"));
    const typed = "    total = a + b\n";
    const next = stream.suggestionAt({ line: 3, character: 0 }, typed);
    assert.ok(next, "the rest is still offered");
    assert.equal(next.insertText.slice(typed.length), "    return total");
    assert.deepEqual(next.start, { line: 2, character: 0 });
  });
});
