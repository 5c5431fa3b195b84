// "EG-CFG: Set up EG-CFG": puts the egcfg server into a Python environment in one go, the way the
// Python tool extensions (Black, Pylint, Mypy) run theirs from the interpreter the user picked.
// The .vsix carries the egcfg wheel (wheels/); setup creates a virtual environment (or uses the
// picked interpreter), installs torch (CUDA or CPU build), then the wheel (with the `gpu` extra on
// an NVIDIA machine), writes every command and its output to a log, and hands back to the extension
// to start the server. Failures are one sentence with the log one click away.
//
// The steps and the decisions are plain functions (unit-tested); the VS Code calls sit behind the
// small SetupUi interface, so the flow itself is tested with a fake UI as well.
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type * as vscode from "vscode";

export type TorchBuild = "cuda" | "cpu";
export type Accelerator = TorchBuild | "unknown";

/** The CPU-only torch for Linux lives on PyTorch's own index (PyPI's Linux torch is the CUDA build). */
export const TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu";
/** Windows: PyPI's torch is the CPU build; the CUDA one comes from PyTorch's index. */
export const TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128";
export const TORCH_REQUIREMENT = "torch>=2.4,<3";
/** Extra pip arguments for every install (e.g. `--no-index --find-links DIR` offline). */
export const PIP_ARGS_ENV = "EGCFG_SETUP_PIP_ARGS";
const MIN_PYTHON = [3, 11] as const;

export interface RunResult {
  code: number | null; // null: could not start, or killed
  output: string;
}

/** Runs a program and returns its exit code and output; never throws. */
export type Runner = (command: string, args: string[], onOutput?: (text: string) => void) => Promise<RunResult>;

export interface Machine {
  platform: NodeJS.Platform;
  exists(path: string): boolean;
  run: Runner;
}

/** Which torch build fits: an NVIDIA GPU that nvidia-smi lists means CUDA; no driver means CPU. */
export async function detectAccelerator(machine: Machine): Promise<{ kind: Accelerator; detail: string }> {
  if (machine.platform === "darwin") {
    return { kind: "cpu", detail: "macOS: the default torch build (CPU and Metal)" };
  }
  const smi = await machine.run("nvidia-smi", ["-L"]);
  const gpu = smi.output.split("\n").find((line) => /^GPU \d+:/.test(line.trim()));
  if (smi.code === 0 && gpu) {
    return { kind: "cuda", detail: gpu.trim() };
  }
  const driver = machine.platform === "linux" && machine.exists("/proc/driver/nvidia");
  if (smi.code === null && !driver) {
    return { kind: "cpu", detail: "no NVIDIA driver found" };
  }
  return { kind: "unknown", detail: smi.code === null ? "an NVIDIA driver is loaded but nvidia-smi is missing" : "nvidia-smi lists no GPU" };
}

/** The interpreter inside a virtual environment. */
export function venvPython(venvDir: string, platform: NodeJS.Platform): string {
  return platform === "win32" ? join(venvDir, "Scripts", "python.exe") : join(venvDir, "bin", "python");
}

/** The newest egcfg wheel in a folder (the one the .vsix carries), by file name. */
export function findWheel(dir: string): string | undefined {
  if (!existsSync(dir)) {
    return undefined;
  }
  const wheels = readdirSync(dir)
    .filter((name) => /^egcfg-.+\.whl$/.test(name))
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  return wheels.length ? join(dir, wheels[wheels.length - 1]) : undefined;
}

/** Extra pip arguments: the setting's list, else the environment variable (a JSON list or words). */
export function extraPipArgs(setting: unknown, env: string | undefined): string[] {
  if (Array.isArray(setting) && setting.length > 0) {
    return setting.map(String);
  }
  const text = (env ?? "").trim();
  if (!text) {
    return [];
  }
  if (text.startsWith("[")) {
    try {
      const parsed = JSON.parse(text);
      return Array.isArray(parsed) ? parsed.map(String) : [];
    } catch {
      return [];
    }
  }
  return text.split(/\s+/);
}

export interface Step {
  title: string; // shown in the progress notification
  doing: string; // for the failure sentence: "EG-CFG setup failed while <doing>"
  command: string;
  args: string[];
}

export interface SetupOptions {
  platform: NodeJS.Platform;
  python: string; // the interpreter to install into (or the base of the new environment)
  venvDir?: string; // create this environment from `python` and install there
  torch: TorchBuild;
  wheel: string;
  pipArgs: string[];
}

/** The commands setup runs, in order. */
export function setupSteps(options: SetupOptions): Step[] {
  const steps: Step[] = [];
  let python = options.python;
  if (options.venvDir) {
    steps.push({ title: "Creating a virtual environment", doing: "creating a virtual environment", command: python, args: ["-m", "venv", options.venvDir] });
    python = venvPython(options.venvDir, options.platform);
  }
  const pip = [
    "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
  ];
  const torchIndex =
    options.torch === "cpu" && options.platform === "linux"
      ? [TORCH_CPU_INDEX]
      : options.torch === "cuda" && options.platform === "win32"
        ? [TORCH_CUDA_INDEX_WINDOWS]
        : [];
  steps.push({
    title: `Installing torch (${options.torch === "cuda" ? "CUDA" : "CPU"} build; a large download)`,
    doing: "installing torch",
    command: python,
    args: [...pip, TORCH_REQUIREMENT, ...torchIndex.flatMap((url) => ["--index-url", url]), ...options.pipArgs],
  });
  const extra = options.torch === "cuda" ? "[gpu]" : "";
  steps.push({
    title: "Installing egcfg",
    doing: "installing egcfg",
    command: python,
    args: [...pip, `egcfg${extra} @ ${pathToFileURL(options.wheel).href}`, ...options.pipArgs],
  });
  steps.push({
    title: "Checking the install",
    doing: "checking the install",
    command: python,
    args: ["-c", "import torch, transformers, lsp_server.server; print('egcfg server imports; torch', torch.__version__)"],
  });
  return steps;
}

/** One sentence for a failed step: what was being done and pip's (or Python's) last error line. */
export function failureSentence(step: Step, result: RunResult): string {
  const lines = result.output.split("\n").map((line) => line.trim()).filter(Boolean);
  const errorLine = [...lines].reverse().find((line) => /^(ERROR|error):|Error:/.test(line)) ?? lines[lines.length - 1] ?? "";
  const detail = errorLine.replace(/^ERROR:\s*/, "").replace(/\.$/, "");
  const why =
    result.code === null
      ? `"${step.command}" could not be run`
      : detail
        ? detail.length > 200
          ? detail.slice(0, 197) + "..."
          : detail
        : `it exited with code ${result.code}`;
  return `EG-CFG setup failed while ${step.doing}: ${why}.`;
}

/** Whether an interpreter runs and is new enough for egcfg. */
export async function pythonVersionOk(run: Runner, python: string): Promise<boolean> {
  const result = await run(python, ["-c", `import sys; print(sys.version_info >= (${MIN_PYTHON.join(", ")}))`]);
  return result.code === 0 && result.output.trim().endsWith("True");
}

/** The first usable base interpreter: the one the user picked, else the usual names on PATH. */
export async function findBasePython(run: Runner, picked: string | undefined, platform: NodeJS.Platform): Promise<string | undefined> {
  const names = platform === "win32" ? ["python"] : ["python3.13", "python3.12", "python3.11", "python3"];
  for (const candidate of [picked, ...names].filter((p): p is string => !!p)) {
    if (await pythonVersionOk(run, candidate)) {
      return candidate;
    }
  }
  return undefined;
}

/** Spawns a program, collects its output, and calls onOutput with each chunk. */
export const spawnRunner: Runner = (command, args, onOutput) =>
  new Promise((resolve) => {
    let output = "";
    let child;
    try {
      child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PIP_NO_INPUT: "1" } });
    } catch (error) {
      resolve({ code: null, output: String(error) });
      return;
    }
    const take = (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      onOutput?.(text);
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("error", (error) => resolve({ code: null, output: output + String(error) }));
    child.on("close", (code) => resolve({ code, output }));
  });

/** What the flow needs from VS Code (vscodeSetupUi below; a fake one in the tests). */
export interface SetupUi {
  pick<T extends string>(placeholder: string, items: Array<{ id: T; label: string; detail?: string }>): Promise<T | undefined>;
  error(message: string, ...actions: string[]): Promise<string | undefined>;
  progress<R>(title: string, task: (report: (message: string) => void) => Promise<R>): Promise<R>;
  openFile(path: string): Promise<void>;
  showServerLog(): Promise<void>;
  pickInterpreterFile(): Promise<string | undefined>;
  /** Sets egcfg.pythonPath where it is defined (else globally); true when the value changed. */
  setPythonPath(python: string): Promise<boolean>;
}

export interface SetupContext {
  ui: SetupUi;
  machine: Machine;
  storageDir: string; // the new environment and the log go here
  wheelDir: string; // the wheels the .vsix carries
  pipArgs(): string[];
  currentPython(): { python: string; runs: boolean };
  restart(): Promise<void>;
}

export type SetupOutcome = "done" | "cancelled" | "failed";

/** The setup flow: choices, the steps under a progress notification, then the server's restart. */
export class SetupFlow {
  readonly logFile: string;
  private running = false;

  constructor(private readonly ctx: SetupContext) {
    this.logFile = join(ctx.storageDir, "setup.log");
  }

  /** The notification shown when no usable server was found. */
  async offer(message: string): Promise<void> {
    const choice = await this.ctx.ui.error(message, "Set up EG-CFG", "Use an existing interpreter", "Show log");
    if (choice === "Set up EG-CFG") {
      await this.run();
    } else if (choice === "Use an existing interpreter") {
      await this.useExisting();
    } else if (choice === "Show log") {
      await this.ctx.ui.showServerLog(); // why the check failed is in the server's log
    }
  }

  /** Points egcfg.pythonPath at an interpreter that already has egcfg, then restarts the server. */
  async useExisting(): Promise<void> {
    const python = await this.ctx.ui.pickInterpreterFile();
    if (python && !(await this.ctx.ui.setPythonPath(python))) {
      await this.ctx.restart();
    }
  }

  async run(): Promise<SetupOutcome> {
    if (this.running) {
      return "cancelled";
    }
    this.running = true;
    try {
      return await this.runOnce();
    } finally {
      this.running = false;
    }
  }

  private async runOnce(): Promise<SetupOutcome> {
    const { ui, machine } = this.ctx;
    mkdirSync(this.ctx.storageDir, { recursive: true });
    writeFileSync(this.logFile, `EG-CFG setup, ${new Date().toISOString()}\n`);
    const wheel = findWheel(this.ctx.wheelDir);
    if (!wheel) {
      return this.fail(`EG-CFG setup failed: this copy of the extension carries no egcfg wheel (looked in ${this.ctx.wheelDir}).`);
    }
    const current = this.ctx.currentPython();
    const venvDir = join(this.ctx.storageDir, "venv");
    const where = await ui.pick("Where should EG-CFG install its server?", [
      { id: "venv", label: "Create a virtual environment for EG-CFG", detail: venvDir },
      ...(current.runs ? [{ id: "current" as const, label: `Install into the selected interpreter`, detail: current.python }] : []),
      { id: "existing", label: "Use an existing interpreter that has egcfg...", detail: "Pick its python executable" },
    ]);
    if (!where) {
      return "cancelled";
    }
    if (where === "existing") {
      await this.useExisting();
      return "done";
    }
    const base = where === "current" ? current.python : await findBasePython(machine.run, current.runs ? current.python : undefined, machine.platform);
    if (!base || !(await pythonVersionOk(machine.run, base))) {
      return this.fail(
        `EG-CFG setup needs Python ${MIN_PYTHON.join(".")} or newer and ${base ? `"${base}" is older` : "found none"}: install one, then run "EG-CFG: Set up EG-CFG" again.`,
      );
    }
    const accelerator = await detectAccelerator(machine);
    this.log(`torch build: ${accelerator.kind} (${accelerator.detail})`);
    let torch: TorchBuild | undefined = accelerator.kind === "unknown" ? undefined : accelerator.kind;
    if (!torch) {
      torch = await ui.pick(`EG-CFG cannot tell whether this machine has a usable NVIDIA GPU (${accelerator.detail}): which torch should it install?`, [
        { id: "cuda", label: "CUDA build", detail: "NVIDIA GPU; with 4-bit weights (bitsandbytes)" },
        { id: "cpu", label: "CPU build", detail: "no GPU; slower, smaller download" },
      ]);
      if (!torch) {
        return "cancelled";
      }
    }
    const steps = setupSteps({
      platform: machine.platform,
      python: base,
      venvDir: where === "venv" ? venvDir : undefined,
      torch,
      wheel,
      pipArgs: this.ctx.pipArgs(),
    });
    const failure = await ui.progress("Setting up EG-CFG", async (report) => {
      for (const step of steps) {
        report(step.title);
        this.log(`\n$ ${[step.command, ...step.args].join(" ")}`);
        const result = await machine.run(step.command, step.args, (text) => this.log(text, false));
        this.log(`(exit code ${result.code})`);
        if (result.code !== 0) {
          return failureSentence(step, result);
        }
      }
      return undefined;
    });
    if (failure) {
      return this.fail(failure);
    }
    const python = where === "venv" ? venvPython(venvDir, machine.platform) : base;
    this.log(`\nEG-CFG is installed in ${python}; starting the server.`);
    if (!(await ui.setPythonPath(python))) {
      await this.ctx.restart();
    }
    return "done";
  }

  private async fail(sentence: string): Promise<SetupOutcome> {
    this.log(sentence);
    const choice = await this.ctx.ui.error(sentence, "Show log");
    if (choice === "Show log") {
      await this.ctx.ui.openFile(this.logFile);
    }
    return "failed";
  }

  private log(text: string, newline = true): void {
    try {
      appendFileSync(this.logFile, newline ? text + "\n" : text);
    } catch {
      // the log is a help, never a reason to fail
    }
  }
}

/** SetupUi over the real VS Code API (`api` is the `vscode` module). */
export function vscodeSetupUi(api: typeof vscode): SetupUi {
  return {
    async pick(placeholder, items) {
      const chosen = await api.window.showQuickPick(items, { placeHolder: placeholder, ignoreFocusOut: true });
      return chosen?.id;
    },
    error: (message, ...actions) => Promise.resolve(api.window.showErrorMessage(message, ...actions)),
    progress: (title, task) =>
      Promise.resolve(
        api.window.withProgress({ location: api.ProgressLocation.Notification, title, cancellable: false }, (progress) =>
          task((message) => progress.report({ message })),
        ),
      ),
    async openFile(path) {
      if (!existsSync(path)) {
        writeFileSync(path, "EG-CFG setup has not run yet.\n");
      }
      await api.window.showTextDocument(api.Uri.file(path), { preview: true });
    },
    async showServerLog() {
      await api.commands.executeCommand("egcfg.showLog");
    },
    async pickInterpreterFile() {
      const chosen = await api.window.showOpenDialog({ canSelectMany: false, openLabel: "Use this Python", title: "A Python interpreter that has egcfg installed" });
      return chosen?.[0]?.fsPath;
    },
    async setPythonPath(python) {
      const config = api.workspace.getConfiguration("egcfg");
      const inspected = config.inspect<string>("pythonPath");
      const target =
        inspected?.workspaceFolderValue !== undefined
          ? api.ConfigurationTarget.WorkspaceFolder
          : inspected?.workspaceValue !== undefined
            ? api.ConfigurationTarget.Workspace
            : api.ConfigurationTarget.Global;
      const before = config.get<string>("pythonPath");
      await config.update("pythonPath", python, target);
      return before !== python; // a changed pythonPath restarts the server by itself
    },
  };
}

/**
 * Registers "EG-CFG: Set up EG-CFG" and "EG-CFG: Use an existing interpreter" and returns the flow
 * (the extension calls `offer` when it finds no usable server).
 */
export function registerSetup(
  api: typeof vscode,
  context: vscode.ExtensionContext,
  hooks: { currentPython(): { python: string; runs: boolean }; restart(): Promise<void> },
): SetupFlow {
  const flow = new SetupFlow({
    ui: vscodeSetupUi(api),
    machine: { platform: process.platform, exists: existsSync, run: spawnRunner },
    storageDir: context.globalStorageUri.fsPath,
    wheelDir: join(context.extensionPath, "wheels"),
    pipArgs: () => extraPipArgs(api.workspace.getConfiguration("egcfg").get("setup.pipArgs"), process.env[PIP_ARGS_ENV]),
    currentPython: hooks.currentPython,
    restart: hooks.restart,
  });
  context.subscriptions.push(
    api.commands.registerCommand("egcfg.setUp", () => flow.run()),
    api.commands.registerCommand("egcfg.useInterpreter", () => flow.useExisting()),
  );
  return flow;
}
