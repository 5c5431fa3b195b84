import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { applyProblem, followChange, lineCount, rejectEdit, startReview, type RegenerateAnswer } from "../src/review";

const answer: RegenerateAnswer = {
  code: "    return a / b if b else 0\n    # done\n",
  replaced: "    return a / b\n",
  function: "ratio",
  range: { start: { line: 11, character: 0 }, end: { line: 12, character: 0 } },
  passed: 1,
  total: 1,
};

function documentWith(newLines: string[]): string[] {
  const lines = Array.from({ length: 11 }, (_, i) => `line ${i}`);
  return [...lines, ...newLines, "after", ""];
}

describe("review of a regenerated body", () => {
  it("applies only over the lines the server read", () => {
    assert.equal(applyProblem(answer, "    return a / b\n"), "");
    assert.match(applyProblem(answer, "    return b / a\n"), /ratio changed while it was being regenerated/);
    assert.equal(applyProblem({ ...answer, error: "cancelled" }, ""), "cancelled");
    assert.equal(applyProblem({ ...answer, code: "" }, "    return a / b\n"), "the engine wrote no body");
  });

  it("rejects by putting the old lines back while the new ones are untouched", () => {
    const review = startReview("file:///m.py", answer);
    assert.equal(lineCount(review.newText), 2);
    const plan = rejectEdit(review, documentWith(["    return a / b if b else 0", "    # done"]));
    assert.deepEqual(plan, { startLine: 11, endLine: 13, text: "    return a / b\n" });
  });

  it("follows edits above the new lines and refuses to reject after an edit inside them", () => {
    let review = startReview("file:///m.py", answer);
    review = followChange(review, { startLine: 2, endLine: 2, insertedNewlines: 2 }); // two lines added above
    assert.equal(review.startLine, 13);
    review = followChange(review, { startLine: 20, endLine: 20, insertedNewlines: 1 }); // below: nothing
    assert.equal(review.startLine, 13);
    assert.equal(review.touched, false);
    const touched = followChange(review, { startLine: 14, endLine: 14, insertedNewlines: 0 });
    assert.equal(touched.touched, true);
    const plan = rejectEdit(touched, ["", "", ...documentWith(["    return a / b if b else 0", "    # done"])]);
    assert.ok("refused" in plan && /use Undo/.test(plan.refused));
    // the text changed without an event we saw: still refused
    assert.ok("refused" in rejectEdit(startReview("u", answer), documentWith(["    return 0", "    # done"])));
  });
});
