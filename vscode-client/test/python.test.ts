import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { checkFailureMessage, checkServerInstalled } from "../src/python";

// A fake interpreter: a shell script that runs python3 with a chosen PYTHONPATH, so the check sees
// an environment with or without lsp_server.
function fakePython(withServer: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), "egcfg-python-"));
  const site = join(dir, "site");
  mkdirSync(join(site, withServer ? "lsp_server" : "other"), { recursive: true });
  if (withServer) {
    writeFileSync(join(site, "lsp_server", "__init__.py"), "");
    writeFileSync(join(site, "lsp_server", "__main__.py"), "raise SystemExit('must not run during the check')\n");
  }
  const script = join(dir, "python");
  writeFileSync(script, `#!/bin/sh\ncd "${dir}" && PYTHONPATH="${site}" exec python3 -I -c "import sys; sys.path.insert(0, '${site}'); exec(sys.argv[1])" "$2"\n`);
  chmodSync(script, 0o755);
  return script;
}

describe("checkServerInstalled", () => {
  it("accepts an interpreter that can run lsp_server without running it", async () => {
    assert.deepEqual(await checkServerInstalled(fakePython(true)), { ok: true });
  });

  it("says plainly when egcfg is not installed", async () => {
    const python = fakePython(false);
    const check = await checkServerInstalled(python);
    assert.equal(check.ok, false);
    assert.equal(!check.ok && check.reason, "not-installed");
    const message = !check.ok ? checkFailureMessage(python, check) : "";
    assert.match(message, /egcfg package is not installed/);
    assert.match(message, /"Set up EG-CFG" installs the server/);
    assert.doesNotMatch(message, /pip install egcfg/); // egcfg is not on PyPI: the extension carries its wheel
  });

  it("reports an interpreter that does not exist", async () => {
    const check = await checkServerInstalled("/nonexistent/bin/python");
    assert.equal(!check.ok && check.reason, "no-interpreter");
    assert.match(!check.ok ? checkFailureMessage("/nonexistent/bin/python", check) : "", /egcfg\.pythonPath/);
  });

  it("gives up on an interpreter that hangs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "egcfg-python-"));
    const script = join(dir, "python");
    writeFileSync(script, "#!/bin/sh\nexec sleep 30\n");
    chmodSync(script, 0o755);
    const check = await checkServerInstalled(script, 300);
    assert.equal(!check.ok && check.reason, "broken");
  });
});
