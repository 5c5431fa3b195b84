// Finding the interpreter that runs the server, and checking that egcfg is installed in it before
// starting (a missing package otherwise shows up as an opaque "server crashed 5 times").
import { spawn } from "node:child_process";

/** Exits 0 when lsp_server can be run with `-m` (its __main__ exists), 3 when it is missing. */
export const CHECK_SCRIPT =
  "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('lsp_server.__main__') else 3)";

export type InstallCheck =
  | { ok: true }
  | { ok: false; reason: "no-interpreter" | "not-installed" | "broken"; detail: string };

/** Runs the check with a time limit, in the folder the server will run in. Never throws. */
export function checkServerInstalled(python: string, timeoutMs = 30000, cwd?: string): Promise<InstallCheck> {
  return new Promise((resolve) => {
    let stderr = "";
    let settled = false;
    const done = (result: InstallCheck) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(result);
      }
    };
    const child = spawn(python, ["-c", CHECK_SCRIPT], { stdio: ["ignore", "ignore", "pipe"], cwd });
    const timer = setTimeout(() => {
      child.kill();
      done({ ok: false, reason: "broken", detail: `"${python}" did not answer within ${timeoutMs / 1000} s` });
    }, timeoutMs);
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on("error", (error: NodeJS.ErrnoException) => {
      const detail = error.code === "ENOENT" || error.code === "EACCES" ? `"${python}" was not found or cannot be run` : error.message;
      done({ ok: false, reason: "no-interpreter", detail });
    });
    child.on("close", (code) => {
      if (code === 0) {
        done({ ok: true });
      } else if (code === 3 || /No module named '?lsp_server/.test(stderr)) {
        done({ ok: false, reason: "not-installed", detail: `the egcfg package is not installed in "${python}"` });
      } else {
        done({ ok: false, reason: "broken", detail: lastLine(stderr) || `"${python}" exited with code ${code}` });
      }
    });
  });
}

/** One plain message for the notification shown when the check fails. */
export function checkFailureMessage(python: string, check: Exclude<InstallCheck, { ok: true }>): string {
  switch (check.reason) {
    case "no-interpreter":
      return `EG-CFG: Python interpreter ${check.detail}. "Set up EG-CFG" installs the server into a new environment, or set "egcfg.pythonPath" to a Python 3.11+ that has egcfg.`;
    case "not-installed":
      return `EG-CFG: ${check.detail}. "Set up EG-CFG" installs the server (the wheel this extension carries) into a new environment or that interpreter.`;
    case "broken":
      return `EG-CFG: checking the egcfg package in "${python}" failed: ${check.detail}`;
  }
}

function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  return lines[lines.length - 1] ?? "";
}
