"""Running untrusted code: the sandboxed executor (a pool of fork servers), verdicts judged on the
host, traces as plain data, their rendering for the model, and repair of partial code.
May import engine.project and engine.errors, never generation, bench or cli. The code that runs
inside the sandbox lives in `sandbox/` and imports only the standard library."""
