// The client-side buffer behind streaming ghost text. Pure logic, no VS Code imports, so it is
// unit-tested with node's test runner.
//
// LSP inline completion has no partial results, so the server streams each committed line as an
// `egcfg/completionLine` notification. The extension keeps one stream per document here, asks VS Code
// to re-query the inline provider when a NEW line arrived, and the provider answers from this buffer
// (a fresh server request would cancel the run).

export interface Position {
  line: number; // 0-based, as in LSP
  character: number;
}

/** `egcfg/completionLine` params (docs/protocol.md). */
export interface CompletionLine {
  requestId?: string | number | null;
  uri: string;
  version?: number | null; // the document version the run was started for
  position: Position; // the request's cursor
  lineNo: number;
  text: string;
  code?: string; // the whole program with the body so far
  body?: string; // the body so far, from the start of the cursor's line
  agent?: number | string | null;
  engineTime?: number | null;
}

/** What the inline provider hands VS Code: replace [start, cursor] with insertText. */
export interface Suggestion {
  insertText: string;
  start: Position;
  end: Position;
}

/**
 * The server writes the body from the start of the cursor's line (its indentation and any partial
 * code included), so the ghost text is anchored at column 0 of that line. Trailing whitespace is
 * dropped so the ghost text ends on code.
 */
export function bodyToInsertText(body: string): string {
  return body.replace(/\s+$/, "");
}

export type StreamState = "running" | "done" | "cancelled";

export class Stream {
  state: StreamState = "running";
  lines = 0; // committed lines seen so far
  agent: string | number | null | undefined; // the agent whose lines are shown
  insertText = "";
  start: Position;

  constructor(
    readonly uri: string,
    readonly position: Position,
    readonly version: number | undefined,
  ) {
    this.start = { line: position.line, character: 0 };
  }

  /**
   * Takes a streamed line; true when the visible text gained a line (worth a re-trigger).
   * Several agents may stream at once: the ghost text follows the first one heard from, so it only
   * ever grows; the final answer (finish) may come from another agent and replaces it.
   */
  addLine(message: CompletionLine): boolean {
    if (this.state !== "running") {
      return false;
    }
    const agent = message.agent ?? null;
    if (this.agent === undefined) {
      this.agent = agent;
    } else if (agent !== this.agent) {
      return false;
    }
    const body = message.body ?? message.code;
    if (typeof body !== "string") {
      return false;
    }
    const text = bodyToInsertText(body);
    const grew = message.lineNo > this.lines || countLines(text) > countLines(this.insertText);
    this.lines = Math.max(this.lines, message.lineNo);
    if (text === this.insertText) {
      return false;
    }
    this.insertText = text;
    return grew;
  }

  /**
   * The final answer: the whole body (the command's `code`, or the inline item's text), optionally
   * with the start of the range it replaces. True when what should be shown changed.
   */
  finish(body: string | undefined, start?: Position): boolean {
    if (this.state === "cancelled") {
      return false;
    }
    this.state = "done";
    if (body === undefined) {
      return false;
    }
    const text = bodyToInsertText(body);
    const startChanged = start !== undefined && !samePosition(start, this.start);
    if (start !== undefined) {
      this.start = { ...start };
    }
    const changed = startChanged || text !== this.insertText;
    this.insertText = text;
    return changed;
  }

  cancel(): void {
    this.state = "cancelled";
  }

  /**
   * The ghost text to show for a cursor, given the document text between the anchor and the cursor
   * (`typed`). The user may have typed or accepted part of it already: as long as what is there is a
   * prefix of the suggestion, the rest is still offered. Undefined when nothing is left or the text
   * diverged.
   */
  suggestionAt(cursor: Position, typed: string): Suggestion | undefined {
    if (this.state === "cancelled" || this.insertText === "" || before(cursor, this.start)) {
      return undefined;
    }
    if (!this.insertText.startsWith(typed) || typed.length >= this.insertText.length) {
      return undefined;
    }
    return { insertText: this.insertText, start: { ...this.start }, end: { ...cursor } };
  }

  /** True while the document still agrees with the suggestion (nothing or a prefix typed). */
  consistentWith(typed: string): boolean {
    return this.insertText.startsWith(typed);
  }
}

/** One stream per document: a new run at another place replaces the old one. */
export class StreamRegistry {
  private readonly streams = new Map<string, Stream>();

  start(uri: string, position: Position, version?: number): Stream {
    this.streams.get(uri)?.cancel();
    const stream = new Stream(uri, position, version);
    this.streams.set(uri, stream);
    return stream;
  }

  get(uri: string): Stream | undefined {
    return this.streams.get(uri);
  }

  /** The stream a streamed line belongs to: same document, version and requested position. */
  streamFor(message: CompletionLine): Stream | undefined {
    const stream = this.streams.get(message.uri);
    if (!stream || stream.state !== "running" || !message.position || !samePosition(stream.position, message.position)) {
      return undefined;
    }
    if (stream.version !== undefined && typeof message.version === "number" && message.version !== stream.version) {
      return undefined;
    }
    return stream;
  }

  /** Routes a streamed line; returns the stream when a re-trigger is worth it. */
  addLine(message: CompletionLine): Stream | undefined {
    const stream = this.streamFor(message);
    return stream && stream.addLine(message) ? stream : undefined;
  }

  drop(uri: string, stream?: Stream): void {
    const current = this.streams.get(uri);
    if (current && (stream === undefined || current === stream)) {
      current.cancel();
      this.streams.delete(uri);
    }
  }

  running(): Stream[] {
    return [...this.streams.values()].filter((stream) => stream.state === "running");
  }
}

export function samePosition(a: Position, b: Position): boolean {
  return a.line === b.line && a.character === b.character;
}

function before(a: Position, b: Position): boolean {
  return a.line < b.line || (a.line === b.line && a.character < b.character);
}

function countLines(text: string): number {
  return text === "" ? 0 : text.split("\n").length;
}
