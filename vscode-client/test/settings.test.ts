import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SERVER_SETTING_KEYS, expandPythonPath, needsRestart, serverSettings } from "../src/settings";

const packageJson = require("../../package.json");

describe("serverSettings", () => {
  it("passes every server setting under its own key", () => {
    const values: Record<string, unknown> = {
      model: " /models/tiny ",
      device: "cpu",
      quantization: "none",
      preset: "editor",
      gammas: [0, 1.5, 3],
      testSeconds: 2.5,
      memoryMb: 512,
      testPatterns: ["test_*.py"],
      trigger: "manual",
      valueDiagnostics: false,
      debounceMs: 250,
      maxFileBytes: 100000,
      maxNewTokens: 256,
      pythonPath: "/usr/bin/python3",
    };
    assert.deepEqual(serverSettings((key) => values[key]), {
      model: "/models/tiny",
      device: "cpu",
      quantization: "none",
      preset: "editor",
      gammas: [0, 1.5, 3],
      testSeconds: 2.5,
      memoryMb: 512,
      testPatterns: ["test_*.py"],
      trigger: "manual",
      valueDiagnostics: false,
      debounceMs: 250,
      maxFileBytes: 100000,
      maxNewTokens: 256,
    });
  });

  it("leaves out unset values so the server keeps its defaults", () => {
    const values: Record<string, unknown> = { model: "", gammas: null, testSeconds: Number.NaN, device: undefined, memoryMb: 0 };
    assert.deepEqual(serverSettings((key) => values[key]), { memoryMb: 0 });
  });

  it("keeps only numbers in gammas", () => {
    const values: Record<string, unknown> = { gammas: [1, "2", Number.POSITIVE_INFINITY, 3] };
    assert.deepEqual(serverSettings((key) => values[key]), { gammas: [1, 3] });
    assert.deepEqual(serverSettings((key) => (key === "gammas" ? [] : undefined)), {});
  });

  it("covers exactly the settings package.json contributes (plus pythonPath)", () => {
    const contributed = Object.keys(packageJson.contributes.configuration.properties)
      .map((key: string) => key.replace(/^egcfg\./, ""))
      .filter((key: string) => !key.startsWith("setup.")); // read by "Set up EG-CFG" only (setup.ts)
    assert.deepEqual([...contributed].sort(), [...SERVER_SETTING_KEYS, "pythonPath"].sort());
  });
});

describe("needsRestart", () => {
  it("restarts for pythonPath only", () => {
    assert.equal(needsRestart((section) => section === "egcfg.pythonPath"), true);
    assert.equal(needsRestart((section) => section === "egcfg.model"), false);
  });
});

describe("expandPythonPath", () => {
  const vars = { workspaceFolder: "/ws", home: "/home/me", env: { VENV: "/opt/venv" } };
  it("expands variables and ~", () => {
    assert.equal(expandPythonPath("${workspaceFolder}/.venv/bin/python", vars), "/ws/.venv/bin/python");
    assert.equal(expandPythonPath("~/py/bin/python", vars), "/home/me/py/bin/python");
    assert.equal(expandPythonPath("${env:VENV}/bin/python", vars), "/opt/venv/bin/python");
    assert.equal(expandPythonPath("${userHome}/x", vars), "/home/me/x");
    assert.equal(expandPythonPath("${env:NOPE}/python", vars), "/python");
  });
  it("returns an empty string for an empty setting", () => {
    assert.equal(expandPythonPath("  ", vars), "");
    assert.equal(expandPythonPath(undefined, vars), "");
  });
});
