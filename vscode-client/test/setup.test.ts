import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import {
  SetupFlow,
  TORCH_CPU_INDEX,
  TORCH_CUDA_INDEX_WINDOWS,
  detectAccelerator,
  extraPipArgs,
  failureSentence,
  findBasePython,
  findWheel,
  setupSteps,
  spawnRunner,
  venvPython,
  type Machine,
  type RunResult,
  type SetupUi,
} from "../src/setup";

function machine(platform: NodeJS.Platform, smi: RunResult, driverLoaded = false): Machine {
  return {
    platform,
    exists: (path) => driverLoaded && path === "/proc/driver/nvidia",
    run: async (command) => (command === "nvidia-smi" ? smi : { code: null, output: "" }),
  };
}

describe("detectAccelerator", () => {
  it("picks CUDA when nvidia-smi lists a GPU", async () => {
    const found = await detectAccelerator(machine("linux", { code: 0, output: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n" }));
    assert.deepEqual(found, { kind: "cuda", detail: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)" });
  });

  it("picks CPU when there is no NVIDIA driver at all", async () => {
    assert.equal((await detectAccelerator(machine("linux", { code: null, output: "spawn nvidia-smi ENOENT" }))).kind, "cpu");
    assert.equal((await detectAccelerator(machine("darwin", { code: 0, output: "GPU 0: x" }))).kind, "cpu");
  });

  it("cannot tell when a driver is loaded but nvidia-smi is missing or lists nothing", async () => {
    assert.equal((await detectAccelerator(machine("linux", { code: null, output: "" }, true))).kind, "unknown");
    assert.equal((await detectAccelerator(machine("linux", { code: 9, output: "NVIDIA-SMI has failed" }))).kind, "unknown");
  });
});

describe("setupSteps", () => {
  const wheel = "/ext/wheels/egcfg-0.1.0-py3-none-any.whl";

  it("creates a venv, installs CPU torch from PyTorch's CPU index on Linux, then the wheel without extras", () => {
    const steps = setupSteps({ platform: "linux", python: "/usr/bin/python3.11", venvDir: "/store/venv", torch: "cpu", wheel, pipArgs: [] });
    assert.deepEqual(steps.map((s) => s.doing), ["creating a virtual environment", "installing torch", "installing egcfg", "checking the install"]);
    assert.deepEqual(steps[0].args, ["-m", "venv", "/store/venv"]);
    assert.equal(steps[0].command, "/usr/bin/python3.11");
    assert.ok(steps.slice(1).every((s) => s.command === "/store/venv/bin/python"));
    const torch = steps[1].args;
    assert.equal(torch[torch.indexOf("--index-url") + 1], TORCH_CPU_INDEX);
    assert.ok(steps[2].args.includes("egcfg @ file:///ext/wheels/egcfg-0.1.0-py3-none-any.whl"), steps[2].args.join(" "));
  });

  it("installs into the picked interpreter, CUDA torch from PyPI on Linux and the gpu extra", () => {
    const steps = setupSteps({ platform: "linux", python: "/home/me/env/bin/python", torch: "cuda", wheel, pipArgs: [] });
    assert.deepEqual(steps.map((s) => s.doing), ["installing torch", "installing egcfg", "checking the install"]);
    assert.ok(!steps[0].args.includes("--index-url"));
    assert.ok(steps[1].args.some((arg) => arg.startsWith("egcfg[gpu] @ file://")));
  });

  it("uses PyTorch's CUDA index on Windows, and its venv layout", () => {
    const steps = setupSteps({ platform: "win32", python: "python", venvDir: "C:\\store\\venv", torch: "cuda", wheel, pipArgs: [] });
    assert.ok(steps[1].args.includes(TORCH_CUDA_INDEX_WINDOWS));
    assert.equal(venvPython("C:\\store\\venv", "win32"), join("C:\\store\\venv", "Scripts", "python.exe"));
  });

  it("puts the extra pip arguments last on every install (offline wheelhouse)", () => {
    const pipArgs = ["--no-index", "--find-links", "/wheelhouse"];
    const steps = setupSteps({ platform: "linux", python: "/p", torch: "cpu", wheel, pipArgs });
    for (const step of steps.filter((s) => s.args.includes("install"))) {
      assert.deepEqual(step.args.slice(-3), pipArgs);
    }
  });
});

describe("extraPipArgs", () => {
  it("takes the setting first, else the environment variable as JSON or words", () => {
    assert.deepEqual(extraPipArgs(["--no-index"], "--find-links /x"), ["--no-index"]);
    assert.deepEqual(extraPipArgs([], "--no-index  --find-links /x"), ["--no-index", "--find-links", "/x"]);
    assert.deepEqual(extraPipArgs(undefined, '["--find-links", "/a b"]'), ["--find-links", "/a b"]);
    assert.deepEqual(extraPipArgs(undefined, undefined), []);
  });
});

describe("failureSentence", () => {
  const step = { title: "t", doing: "installing torch", command: "/p", args: [] };

  it("is one sentence naming the step and pip's error line", () => {
    const output = "Looking in indexes: x\nERROR: Could not find a version that satisfies the requirement torch<3,>=2.4 (from versions: none)\nERROR: No matching distribution found for torch<3,>=2.4\n";
    assert.equal(failureSentence(step, { code: 1, output }), "EG-CFG setup failed while installing torch: No matching distribution found for torch<3,>=2.4.");
  });

  it("says when the program could not be run at all", () => {
    assert.equal(failureSentence(step, { code: null, output: "spawn /p ENOENT" }), 'EG-CFG setup failed while installing torch: "/p" could not be run.');
  });
});

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "egcfg-setup-"));
}

describe("findWheel and findBasePython", () => {
  it("picks the newest carried wheel", () => {
    const dir = tempDir();
    for (const name of ["egcfg-0.9.0-py3-none-any.whl", "egcfg-0.10.0-py3-none-any.whl", "other-1.0-py3-none-any.whl"]) {
      writeFileSync(join(dir, name), "");
    }
    assert.equal(findWheel(dir), join(dir, "egcfg-0.10.0-py3-none-any.whl"));
    assert.equal(findWheel(join(dir, "missing")), undefined);
  });

  it("skips interpreters that are missing or too old", async () => {
    const dir = tempDir();
    const old = join(dir, "python-old");
    writeFileSync(old, "#!/bin/sh\necho False\n");
    chmodSync(old, 0o755);
    assert.equal(await findBasePython(spawnRunner, old, "linux").then((p) => p === old), false);
    assert.equal(await findBasePython(spawnRunner, join(dir, "nope"), "linux").then((p) => p === join(dir, "nope")), false);
  });
});

/** A UI that answers from a script and records what it was asked and shown. */
function fakeUi(answers: { pick: string[]; error?: string }) {
  const shown: string[] = [];
  const opened: string[] = [];
  const progress: string[] = [];
  let pythonPath = "";
  const ui: SetupUi = {
    pick: async (placeholder, items) => {
      shown.push(`pick: ${placeholder} [${items.map((i) => i.id).join(", ")}]`);
      return answers.pick.shift() as never;
    },
    error: async (message) => {
      shown.push(`error: ${message}`);
      return answers.error;
    },
    progress: (_title, task) => task((message) => progress.push(message)),
    openFile: async (path) => void opened.push(path),
    showServerLog: async () => void opened.push("server log"),
    pickInterpreterFile: async () => "/picked/python",
    setPythonPath: async (python) => {
      const changed = python !== pythonPath;
      pythonPath = python;
      return changed;
    },
  };
  return { ui, shown, opened, progress, pythonPath: () => pythonPath };
}

function flowMachine(failAt?: string): { machine: Machine; commands: string[][] } {
  const commands: string[][] = [];
  return {
    commands,
    machine: {
      platform: "linux",
      exists: () => false,
      run: async (command, args, onOutput) => {
        commands.push([command, ...args]);
        if (command === "nvidia-smi") return { code: null, output: "ENOENT" };
        if (args[0] === "-c" && args[1].includes("version_info")) return { code: 0, output: "True\n" };
        if (failAt && args.includes(failAt)) {
          onOutput?.("ERROR: No matching distribution found for torch<3,>=2.4\n");
          return { code: 1, output: "ERROR: No matching distribution found for torch<3,>=2.4\n" };
        }
        onOutput?.("ok\n");
        return { code: 0, output: "ok\n" };
      },
    },
  };
}

function flow(ui: SetupUi, machine: Machine, restarts: string[]) {
  const storage = tempDir();
  const wheels = tempDir();
  writeFileSync(join(wheels, "egcfg-0.1.0-py3-none-any.whl"), "");
  return new SetupFlow({
    ui,
    machine,
    storageDir: storage,
    wheelDir: wheels,
    pipArgs: () => ["--no-index"],
    currentPython: () => ({ python: "/bare/python", runs: true }),
    restart: async () => void restarts.push("restart"),
  });
}

describe("SetupFlow", () => {
  it("creates the environment, installs CPU torch and the wheel, logs it all and points pythonPath at it", async () => {
    const fake = fakeUi({ pick: ["venv"] });
    const { machine, commands } = flowMachine();
    const restarts: string[] = [];
    const setup = flow(fake.ui, machine, restarts);
    assert.equal(await setup.run(), "done");
    const venv = commands.find((c) => c.includes("venv"));
    assert.ok(venv && venv[0] === "/bare/python", JSON.stringify(commands));
    assert.ok(commands.some((c) => c.includes(TORCH_CPU_INDEX) && c.includes("--no-index")));
    assert.deepEqual(fake.progress, ["Creating a virtual environment", "Installing torch (CPU build; a large download)", "Installing egcfg", "Checking the install"]);
    assert.ok(fake.pythonPath().endsWith("/venv/bin/python"));
    assert.deepEqual(restarts, []); // the changed pythonPath restarts the server by itself
    const log = readFileSync(setup.logFile, "utf8");
    assert.match(log, /\$ \S+\/venv\/bin\/python -m pip install .*torch>=2\.4,<3/);
    assert.ok(!fake.shown.some((s) => s.startsWith("error:")), fake.shown.join("\n"));
  });

  it("fails with one sentence and opens the log on request", async () => {
    const fake = fakeUi({ pick: ["current"], error: "Show log" });
    const { machine } = flowMachine("torch>=2.4,<3");
    const setup = flow(fake.ui, machine, []);
    assert.equal(await setup.run(), "failed");
    const errors = fake.shown.filter((s) => s.startsWith("error:"));
    assert.deepEqual(errors, ["error: EG-CFG setup failed while installing torch: No matching distribution found for torch<3,>=2.4."]);
    assert.deepEqual(fake.opened, [setup.logFile]);
    assert.match(readFileSync(setup.logFile, "utf8"), /exit code 1/);
  });

  it("asks which torch to install when it cannot tell, and stops if the question is dismissed", async () => {
    const fake = fakeUi({ pick: ["current"] });
    const { machine, commands } = flowMachine();
    machine.exists = () => true; // a driver is loaded, nvidia-smi is missing
    const setup = flow(fake.ui, machine, []);
    assert.equal(await setup.run(), "cancelled");
    assert.ok(fake.shown.some((s) => /cannot tell .* \[cuda, cpu\]/.test(s)), fake.shown.join("\n"));
    assert.ok(!commands.some((c) => c.includes("install")));
  });

  it("can point at an existing interpreter instead", async () => {
    const fake = fakeUi({ pick: ["existing"] });
    const setup = flow(fake.ui, flowMachine().machine, []);
    assert.equal(await setup.run(), "done");
    assert.equal(fake.pythonPath(), "/picked/python");
  });
});
