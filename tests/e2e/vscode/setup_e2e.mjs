// End-to-end test of "EG-CFG: Set up EG-CFG" in a real VS Code (code-server 4.100.3 = VS Code
// 1.100.3) driven by headless Chromium. Run it through setup_e2e.sh (`make e2e-setup`), which builds
// the .vsix with the egcfg wheel inside, a bare interpreter, a tiny model and a local wheelhouse.
//
// From a bare interpreter (a venv without egcfg) to a ready status bar, offline:
//   1. the extension finds no usable server: the status bar says "not installed" and a notification
//      offers "Set up EG-CFG"
//   2. clicking it, then "Create a virtual environment for EG-CFG", runs the setup under a progress
//      notification: a venv from the bare interpreter, torch (CPU: this machine has no NVIDIA
//      driver), then the wheel the .vsix carries; pip reads only the wheelhouse
//      (EGCFG_SETUP_PIP_ARGS=--no-index --find-links DIR)
//   3. egcfg.pythonPath now names the new environment, the server starts, the status bar says ready
//   4. the setup log holds every command; the environment imports egcfg from its own site-packages;
//      the server's output (the EG-CFG channel) holds no library warnings
// Screenshots and logs: test-output/e2e-setup/.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const codeServer = join(here, ".cache/code-server/node_modules/code-server/out/node/entry.js");
const vsix = join(repo, "vscode-client/dist/egcfg.vsix");
const shots = join(repo, "test-output/e2e-setup");
const bare = process.env.EGCFG_E2E_BARE_PYTHON; // made by setup_e2e.sh
const wheelhouse = process.env.EGCFG_E2E_WHEELHOUSE;
const model = process.env.EGCFG_E2E_MODEL;
const chromiumPath = process.env.EGCFG_E2E_CHROMIUM || "/usr/bin/chromium";
const keep = process.env.EGCFG_E2E_KEEP === "1";
const UI_TIMEOUT = 30000;
const SETUP_TIMEOUT = 600000; // torch and the rest from a local wheelhouse: about a minute here

const started = Date.now();
const log = (message) => console.error(`[e2e-setup ${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`);
const cleanups = [];

function fail(message) {
  throw new Error(message);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", ...options });
  if (result.status !== 0) fail(`${command} ${args.join(" ")} failed (exit ${result.status}):\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
    server.on("error", reject);
  });
}

async function waitFor(what, check, timeoutMs, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      if (error instanceof Error && error.message.startsWith("FATAL ")) throw error;
      last = error;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last instanceof Error ? ` (${last.message})` : ""}`);
}

function preflight() {
  const missing = [];
  if (!existsSync(codeServer)) missing.push("code-server (run tests/e2e/vscode/setup.sh)");
  if (!existsSync(join(here, "node_modules/playwright-core"))) missing.push("playwright-core (run tests/e2e/vscode/setup.sh)");
  if (!existsSync(chromiumPath)) missing.push(`chromium at ${chromiumPath}`);
  if (!existsSync(vsix)) missing.push("the .vsix (make vsix)");
  for (const [name, value] of [["EGCFG_E2E_BARE_PYTHON", bare], ["EGCFG_E2E_WHEELHOUSE", wheelhouse], ["EGCFG_E2E_MODEL", model]]) {
    if (!value || !existsSync(value)) missing.push(`${name} (run through setup_e2e.sh)`);
  }
  if (missing.length) fail(`missing: ${missing.join("; ")}`);
  // from a neutral folder: `python -c` puts the current folder (here the checkout) on sys.path
  const has = spawnSync(bare, ["-c", "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('lsp_server') else 3)"], { cwd: tmpdir() });
  if (has.status !== 3) fail(`${bare} is not a bare interpreter (it has lsp_server, or does not run)`);
  const carried = run("node", ["-e", `const z=require("fs").readFileSync(${JSON.stringify(vsix)}); process.stdout.write(String(z.includes("extension/wheels/egcfg-")))`]);
  if (carried !== "true") fail("the .vsix carries no egcfg wheel (make vsix)");
}

function makeWorkspace(root) {
  const workspace = join(root, "workspace");
  mkdirSync(join(workspace, ".vscode"), { recursive: true });
  writeFileSync(join(workspace, "mathutils.py"), 'def add_numbers(a, b):\n    """Return the sum of a and b."""\n\n');
  writeFileSync(
    join(workspace, ".vscode/settings.json"),
    JSON.stringify(
      { "egcfg.pythonPath": bare, "egcfg.model": model, "egcfg.device": "cpu", "egcfg.quantization": "none", "egcfg.trigger": "manual" },
      null,
      2,
    ),
  );
  return workspace;
}

function userSettings(userData) {
  mkdirSync(join(userData, "User"), { recursive: true });
  writeFileSync(
    join(userData, "User/settings.json"),
    JSON.stringify({
      "workbench.startupEditor": "none",
      "workbench.tips.enabled": false,
      "workbench.enableExperiments": false,
      "security.workspace.trust.enabled": false,
      "telemetry.telemetryLevel": "off",
      "extensions.autoCheckUpdates": false,
      "extensions.autoUpdate": false,
      "update.mode": "none",
      "chat.disableAIFeatures": true,
    }),
  );
}

async function startCodeServer(root, workspace) {
  const userData = join(root, "user-data");
  const extensions = join(root, "extensions");
  userSettings(userData);
  const env = {
    ...process.env,
    XDG_CONFIG_HOME: join(root, "xdg/config"),
    XDG_DATA_HOME: join(root, "xdg/data"),
    XDG_CACHE_HOME: join(root, "xdg/cache"),
    HF_HUB_OFFLINE: "1",
    // inherited by the extension host: the setup's pip reads the wheelhouse only
    EGCFG_SETUP_PIP_ARGS: JSON.stringify(["--no-index", "--find-links", wheelhouse]),
  };
  delete env.PYTHONPATH;
  const common = ["--user-data-dir", userData, "--extensions-dir", extensions];
  log("installing the .vsix");
  const installed = run("node", [codeServer, ...common, "--install-extension", vsix], { env });
  if (!/successfully installed/i.test(installed)) fail(`installing the .vsix: ${installed}`);
  const port = await freePort();
  const serverLog = [];
  const child = spawn(
    "node",
    [codeServer, ...common, "--auth", "none", "--bind-addr", `127.0.0.1:${port}`, "--disable-telemetry",
      "--disable-update-check", "--disable-workspace-trust", workspace],
    { env, stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  child.stdout.on("data", (chunk) => serverLog.push(chunk.toString()));
  child.stderr.on("data", (chunk) => serverLog.push(chunk.toString()));
  cleanups.push(() => {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
  });
  const url = `http://127.0.0.1:${port}/`;
  await waitFor("code-server to answer", async () => (await fetch(url + "healthz")).ok, 60000);
  return { url: `${url}?folder=${encodeURIComponent(workspace)}`, serverLog, userData };
}

async function statusBarText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll(".statusbar-item")].map((el) => el.textContent || "").filter((t) => t.includes("EG-CFG")).join(" | "),
  );
}

async function toastsText(page) {
  return (await page.locator(".notifications-toasts .notification-toast").allInnerTexts()).join(" | ");
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(shots, name) });
  log(`screenshot ${join(shots, name)}`);
}

function findFiles(dir, suffix) {
  return existsSync(dir) ? readdirSync(dir, { recursive: true }).map(String).filter((p) => p.endsWith(suffix)).map((p) => join(dir, p)) : [];
}

async function main() {
  preflight();
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  const root = mkdtempSync(join(tmpdir(), "egcfg-setup-e2e-"));
  log(`scratch folder ${root}`);
  const workspace = makeWorkspace(root);
  const { url, serverLog, userData } = await startCodeServer(root, workspace);
  // after code-server (and the server it started) is stopped: the new environment is large
  if (!keep) cleanups.push(() => spawnSync("rm", ["-rf", root]));
  cleanups.unshift(() => writeFileSync(join(shots, "code-server.log"), serverLog.join("")));
  cleanups.unshift(() => {
    for (const path of [...findFiles(join(userData, "logs"), "EG-CFG.log"), ...findFiles(join(userData, "User/globalStorage"), "setup.log")]) {
      copyFileSync(path, join(shots, path.endsWith("setup.log") ? "setup.log" : "EG-CFG.log"));
    }
  });

  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  cleanups.unshift(() => browser.close());
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 850 } })).newPage();
  try {
    log("opening the workspace");
    await page.goto(url);
    await page.locator(".monaco-workbench").waitFor({ timeout: 60000 });
    await page.keyboard.press("Control+P");
    await page.locator(".quick-input-widget input").fill("mathutils.py");
    await page.locator(".quick-input-widget .monaco-list-row", { hasText: "mathutils.py" }).first().waitFor({ timeout: UI_TIMEOUT });
    await page.keyboard.press("Enter");

    // 1. no usable server: the offer
    const offer = await waitFor("the Set up EG-CFG offer", async () => {
      const status = await statusBarText(page);
      const toasts = await toastsText(page);
      return /EG-CFG not installed/.test(status) && /Set up EG-CFG/.test(toasts) ? { status, toasts } : false;
    }, 120000, 500);
    log(`offer: ${offer.toasts.replace(/\s+/g, " ").slice(0, 300)}`);
    if (/pip install egcfg/.test(offer.toasts)) fail("the message still sends users to pip install egcfg");
    await screenshot(page, "1-offer.png");

    // 2. Set up EG-CFG -> a new virtual environment
    await page.locator(".notifications-toasts .notification-toast .monaco-button", { hasText: "Set up EG-CFG" }).first().click();
    const row = page.locator(".quick-input-widget .monaco-list-row", { hasText: "Create a virtual environment for EG-CFG" }).first();
    await row.waitFor({ state: "visible", timeout: UI_TIMEOUT });
    await screenshot(page, "2-where.png");
    await row.click();
    const progress = await waitFor("the setup's progress notification", async () => {
      const toasts = await toastsText(page);
      return /Setting up EG-CFG/.test(toasts) ? toasts : false;
    }, UI_TIMEOUT, 100);
    log(`progress: ${progress.replace(/\s+/g, " ").slice(0, 200)}`);
    await screenshot(page, "3-progress.png");

    // 3. the server starts from the new environment
    let shotInstalling = false;
    const ready = await waitFor("EG-CFG ready after the setup", async () => {
      const status = await statusBarText(page);
      const toasts = await toastsText(page);
      if (/EG-CFG setup failed|EG-CFG setup needs/.test(toasts)) throw new Error(`FATAL the setup failed: ${toasts}`);
      if (!shotInstalling && /Installing egcfg/.test(toasts)) {
        shotInstalling = true;
        await screenshot(page, "4-installing-egcfg.png");
      }
      return /EG-CFG ready/.test(status) ? status : false;
    }, SETUP_TIMEOUT, 500);
    log(`status bar: ${ready}`);
    if (!/tiny-model/.test(ready) || !/cpu/.test(ready)) fail(`the ready status should name the model and device: ${ready}`);
    await screenshot(page, "5-ready.png");

    // 4. where it went, and what was logged
    const settings = JSON.parse(readFileSync(join(workspace, ".vscode/settings.json"), "utf8"));
    const python = settings["egcfg.pythonPath"];
    if (!python || python === bare || !python.startsWith(join(userData, "User/globalStorage")) || !python.endsWith("/venv/bin/python")) {
      fail(`egcfg.pythonPath should name the new environment in the extension's storage, got ${python}`);
    }
    const where = run(python, ["-c", "import lsp_server, torch; print(lsp_server.__file__, torch.__version__)"], { cwd: root }).trim();
    if (!where.includes("/venv/lib/")) fail(`egcfg is not imported from the new environment: ${where}`);
    log(`new environment: ${where}`);
    const setupLog = readFileSync(findFiles(join(userData, "User/globalStorage"), "setup.log")[0], "utf8");
    for (const wanted of ["-m venv", "torch>=2.4,<3", "egcfg @ file://", "--no-index", "(exit code 0)"]) {
      if (!setupLog.includes(wanted)) fail(`the setup log lacks ${JSON.stringify(wanted)}`);
    }
    // the server's stderr lands in the EG-CFG output channel: a normal start prints no library warnings
    const serverOutput = findFiles(join(userData, "logs"), "EG-CFG.log").map((path) => readFileSync(path, "utf8")).join("\n");
    const noise = serverOutput.split("\n").filter((line) => /\w+Warning\b|deprecated|kernels-community/i.test(line));
    if (noise.length) fail(`the server printed third-party warnings: ${noise.slice(0, 3).join(" / ")}`);
    writeFileSync(join(shots, "result.json"), JSON.stringify({ status: ready, python, imports: where, seconds: (Date.now() - started) / 1000 }, null, 1));
    log("PASS");
  } catch (error) {
    await screenshot(page, "failure.png").catch(() => {});
    throw error;
  }
}

try {
  await main();
} catch (error) {
  console.error(`e2e-setup FAILED: ${error instanceof Error ? error.message.replace(/^FATAL /, "") : error}`);
  process.exitCode = 1;
} finally {
  for (const cleanup of cleanups) {
    try {
      await cleanup();
    } catch {}
  }
}
