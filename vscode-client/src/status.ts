// Turns `egcfg/status` notifications (and the extension's own states) into status bar text.
// Pure logic, unit-tested without VS Code.

/** `egcfg/status` params (docs/protocol.md); every field but `state` may be missing. */
export interface ServerStatus {
  state: "loading" | "ready" | "running" | "error" | "idle" | string;
  message?: string | null;
  model?: string | null;
  device?: string | null;
  quantized?: boolean | null;
  progress?: number | null; // 0-100
  agent?: number | string | null;
  line?: number | null;
  passed?: number | null;
  total?: number | null;
  isolation?: string | null; // bubblewrap | landlock | limits (limits: the user opted out of the sandbox)
}

export interface StatusView {
  text: string; // may use $(codicon) syntax
  tooltip: string;
  severity: "normal" | "warning" | "error";
  showLogOnClick: boolean;
}

/** "Qwen/Qwen2.5-Coder-7B-Instruct" -> "Qwen2.5-Coder-7B-Instruct"; "/tmp/tiny/" -> "tiny". */
export function shortModelName(model: string | null | undefined): string {
  if (!model) {
    return "";
  }
  const parts = model.replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts[parts.length - 1] || model;
}

export function modelSummary(status: ServerStatus): string {
  const parts = [shortModelName(status.model)];
  if (status.device) {
    parts.push(status.device);
  }
  if (status.quantized === true) {
    parts.push("4-bit");
  } else if (status.quantized === false) {
    parts.push("full precision");
  }
  return parts.filter((part) => part !== "").join(" · ");
}

function percent(progress: number | null | undefined): string {
  if (typeof progress !== "number" || !Number.isFinite(progress)) {
    return "";
  }
  return ` ${Math.max(0, Math.min(100, Math.round(progress)))}%`;
}

/** Tests run without a sandbox only when the user asked for it (`egcfg.sandbox: "limits"`); the
 * status bar says so in every state, as a warning. */
export function statusView(status: ServerStatus): StatusView {
  const view = baseStatusView(status);
  if (status.isolation !== "limits" || view.severity === "error") {
    return view;
  }
  return {
    ...view,
    text: `${view.text} $(unlock) no sandbox`,
    tooltip: `${view.tooltip}\nTests and candidates run WITHOUT a sandbox (egcfg.sandbox is "limits"): only resource limits apply.`,
    severity: "warning",
  };
}

function baseStatusView(status: ServerStatus): StatusView {
  const message = status.message ? String(status.message) : "";
  switch (status.state) {
    case "loading":
      return {
        text: `$(sync~spin) EG-CFG loading${percent(status.progress)}`,
        tooltip: message || `Loading ${shortModelName(status.model) || "the model"}`,
        severity: "normal",
        showLogOnClick: true,
      };
    case "ready":
    case "idle": {
      const summary = modelSummary(status);
      return {
        text: `$(check) EG-CFG ready${summary ? ": " + summary : ""}`,
        tooltip: message || "EG-CFG is ready. Run \"EG-CFG: Complete with tests\" (Ctrl+Alt+Enter) in a function.",
        severity: "normal",
        showLogOnClick: true,
      };
    }
    case "running": {
      const parts: string[] = [];
      if (status.agent !== undefined && status.agent !== null && status.agent !== "") {
        parts.push(`agent ${status.agent}`);
      }
      if (typeof status.line === "number") {
        parts.push(`line ${status.line}`);
      }
      if (typeof status.total === "number" && status.total > 0) {
        parts.push(`tests ${status.passed ?? 0}/${status.total}`);
      }
      return {
        text: `$(loading~spin) EG-CFG running${parts.length ? ": " + parts.join(" · ") : ""}`,
        tooltip: message || "A guided completion is running. \"EG-CFG: Cancel\" stops it.",
        severity: "normal",
        showLogOnClick: true,
      };
    }
    case "error":
      return {
        text: "$(error) EG-CFG error",
        tooltip: (message || "The EG-CFG server reported an error.") + " Click to open the log.",
        severity: "error",
        showLogOnClick: true,
      };
    default:
      return {
        text: `EG-CFG ${status.state}`,
        tooltip: message,
        severity: "normal",
        showLogOnClick: true,
      };
  }
}

/** The extension's own states, before the server reports anything. */
export function clientStatusView(state: "starting" | "missing" | "stopped", detail = ""): StatusView {
  switch (state) {
    case "starting":
      return { text: "$(sync~spin) EG-CFG starting", tooltip: detail || "Starting the EG-CFG server", severity: "normal", showLogOnClick: true };
    case "missing":
      return { text: "$(warning) EG-CFG not installed", tooltip: detail, severity: "warning", showLogOnClick: true };
    case "stopped":
      return { text: "$(circle-slash) EG-CFG stopped", tooltip: detail || "The EG-CFG server is not running. Click for the log.", severity: "error", showLogOnClick: true };
  }
}
