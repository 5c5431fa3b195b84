import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clientStatusView, modelSummary, shortModelName, statusView } from "../src/status";

describe("statusView", () => {
  it("shows loading with a clamped, rounded percentage", () => {
    assert.equal(statusView({ state: "loading", progress: 42.4 }).text, "$(sync~spin) EG-CFG loading 42%");
    assert.equal(statusView({ state: "loading", progress: 130 }).text, "$(sync~spin) EG-CFG loading 100%");
    assert.equal(statusView({ state: "loading" }).text, "$(sync~spin) EG-CFG loading");
  });

  it("shows the model, the device and whether it is 4-bit when ready", () => {
    const view = statusView({ state: "ready", model: "Qwen/Qwen2.5-Coder-7B-Instruct", device: "cuda", quantized: true });
    assert.equal(view.text, "$(check) EG-CFG ready: Qwen2.5-Coder-7B-Instruct · cuda · 4-bit");
    assert.equal(view.severity, "normal");
    assert.equal(
      statusView({ state: "ready", model: "/tmp/e2e/tiny-model/", device: "cpu", quantized: false }).text,
      "$(check) EG-CFG ready: tiny-model · cpu · full precision",
    );
  });

  it("shows agent, line and passing tests while running", () => {
    const view = statusView({ state: "running", agent: 2, line: 5, passed: 1, total: 3 });
    assert.equal(view.text, "$(loading~spin) EG-CFG running: agent 2 · line 5 · tests 1/3");
    assert.equal(statusView({ state: "running" }).text, "$(loading~spin) EG-CFG running");
    assert.equal(statusView({ state: "running", line: 1, total: 0 }).text, "$(loading~spin) EG-CFG running: line 1");
  });

  it("warns in every state when tests run without a sandbox (limits), and only then", () => {
    for (const state of ["ready", "running", "loading", "idle"]) {
      const view = statusView({ state, model: "m", isolation: "limits" });
      assert.match(view.text, /no sandbox$/);
      assert.equal(view.severity, "warning");
      assert.match(view.tooltip, /WITHOUT a sandbox/);
    }
    for (const isolation of ["bubblewrap", "landlock", undefined]) {
      const view = statusView({ state: "ready", model: "m", isolation });
      assert.doesNotMatch(view.text, /no sandbox/);
      assert.equal(view.severity, "normal");
    }
    assert.equal(statusView({ state: "error", message: "x", isolation: "limits" }).severity, "error");
  });

  it("marks errors and points at the log", () => {
    const view = statusView({ state: "error", message: "CUDA out of memory." });
    assert.equal(view.text, "$(error) EG-CFG error");
    assert.equal(view.severity, "error");
    assert.equal(view.showLogOnClick, true);
    assert.match(view.tooltip, /CUDA out of memory\. Click to open the log\./);
  });

  it("has the extension's own states", () => {
    assert.equal(clientStatusView("missing", "not installed").severity, "warning");
    assert.equal(clientStatusView("stopped").severity, "error");
  });
});

describe("model names", () => {
  it("shortens hub names and folders", () => {
    assert.equal(shortModelName("deepseek-ai/deepseek-coder-1.3b-instruct"), "deepseek-coder-1.3b-instruct");
    assert.equal(shortModelName("C:\\models\\tiny\\"), "tiny");
    assert.equal(shortModelName(undefined), "");
    assert.equal(modelSummary({ state: "ready" }), "");
  });
});
