// A regenerated function body as a reviewable change. Ghost text cannot replace lines that exist,
// so the answer of egcfg.regenerateFrom is applied as one edit (one Undo takes it back), its lines
// are highlighted, and lenses above it offer Keep, Reject and Compare. Reject puts the old lines
// back only while the new ones are untouched; after an edit inside them it says so and leaves the
// document alone (Undo still works). Pure logic here; the VS Code side is in reviewView.ts.

/** The answer of egcfg.regenerateFrom (docs/protocol.md). */
export interface RegenerateAnswer {
  code?: string;
  replaced?: string;
  function?: string;
  range?: { start: { line: number; character: number }; end: { line: number; character: number } };
  passed?: number;
  total?: number;
  agent?: string;
  error?: string;
}

/** One applied change under review: where the new lines are, and what they replaced. */
export interface Review {
  uri: string;
  functionName: string;
  startLine: number; // first new line (0-based)
  newText: string; // the lines now in the document
  oldText: string; // the lines they replaced
  touched: boolean; // edited inside since: reject would lose that edit
  passed: number;
  total: number;
}

/** Lines of a text that ends with a newline (the answer's texts always do, or are empty). */
export function lineCount(text: string): number {
  if (text === "") {
    return 0;
  }
  return text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

/**
 * Why the answer cannot be applied to the document as it is now ("" when it can): the lines it
 * replaces must still be the ones the server read.
 */
export function applyProblem(answer: RegenerateAnswer, current: string): string {
  if (answer.error) {
    return answer.error;
  }
  if (!answer.range || typeof answer.code !== "string" || answer.code === "") {
    return "the engine wrote no body";
  }
  if (typeof answer.replaced === "string" && current !== answer.replaced) {
    return `${answer.function ?? "the function"} changed while it was being regenerated; nothing was replaced`;
  }
  return "";
}

export function startReview(uri: string, answer: RegenerateAnswer): Review {
  return {
    uri,
    functionName: answer.function ?? "",
    startLine: answer.range?.start.line ?? 0,
    newText: answer.code ?? "",
    oldText: answer.replaced ?? "",
    touched: false,
    passed: answer.passed ?? 0,
    total: answer.total ?? 0,
  };
}

/** A document change, as lines: `[start, end)` replaced by text with `insertedLines` newlines. */
export interface LineChange {
  startLine: number;
  endLine: number; // the last line the replaced range touches
  insertedNewlines: number;
}

/**
 * Follows an edit: one above the new lines moves them; one inside (or across) marks them touched.
 * Returns the updated review.
 */
export function followChange(review: Review, change: LineChange): Review {
  const last = review.startLine + Math.max(lineCount(review.newText), 1) - 1;
  if (change.startLine > last) {
    return review;
  }
  if (change.endLine < review.startLine) {
    const removed = change.endLine - change.startLine;
    return { ...review, startLine: review.startLine + change.insertedNewlines - removed };
  }
  return { ...review, touched: true };
}

/** What Reject does: put `oldText` in place of the new lines, or why it will not. */
export function rejectEdit(review: Review, documentLines: string[]): { startLine: number; endLine: number; text: string } | { refused: string } {
  const count = lineCount(review.newText);
  const now = documentLines.slice(review.startLine, review.startLine + count).map((line) => line + "\n").join("");
  if (review.touched || now !== review.newText) {
    return { refused: "the regenerated lines were edited since; use Undo (Ctrl+Z) to go back step by step" };
  }
  return { startLine: review.startLine, endLine: review.startLine + count, text: review.oldText };
}

export function reviewMessage(review: Review): string {
  const tests = review.total > 0 ? `${review.passed}/${review.total} tests pass` : "no tests to check it";
  return `EG-CFG regenerated ${review.functionName || "the function"} (${tests}). Keep it, or Reject to restore the old lines.`;
}
