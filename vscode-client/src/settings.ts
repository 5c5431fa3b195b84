// Maps the `egcfg.*` settings to what the server accepts (initializationOptions and
// workspace/didChangeConfiguration). Pure logic: the caller passes a getter over the VS Code config.

/** Settings the server reads, by their key under "egcfg" (the same key the server uses). */
export const SERVER_SETTING_KEYS = [
  "model",
  "device",
  "quantization",
  "preset",
  "gammas",
  "maxNewTokens",
  "compile",
  "nf4Kernel",
  "testSeconds",
  "memoryMb",
  "testPatterns",
  "trigger",
  "valueDiagnostics",
  "valueHints",
  "debounceMs",
  "maxFileBytes",
  "readFolders",
] as const;

/** Settings only the extension uses: changing them restarts the server instead. */
export const CLIENT_SETTING_KEYS = ["pythonPath"] as const;

export type ServerSettings = Partial<Record<(typeof SERVER_SETTING_KEYS)[number], unknown>>;

/**
 * The server's settings from a config getter. Unset values, nulls and an empty model name are left
 * out so the server applies its own defaults; numbers that are not finite are dropped.
 */
export function serverSettings(get: (key: string) => unknown): ServerSettings {
  const settings: ServerSettings = {};
  for (const key of SERVER_SETTING_KEYS) {
    const value = get(key);
    if (value === undefined || value === null || (typeof value === "string" && value.trim() === "")) {
      continue;
    }
    if (typeof value === "number" && !Number.isFinite(value)) {
      continue;
    }
    if (key === "gammas") {
      const gammas = Array.isArray(value) ? value.filter((g) => typeof g === "number" && Number.isFinite(g)) : [];
      if (gammas.length > 0) {
        settings.gammas = gammas;
      }
      continue;
    }
    settings[key] = typeof value === "string" ? value.trim() : value;
  }
  return settings;
}

/** True when a configuration change needs the server process restarted (not just told). */
export function needsRestart(affects: (section: string) => boolean): boolean {
  return CLIENT_SETTING_KEYS.some((key) => affects(`egcfg.${key}`));
}

/**
 * Expands `${workspaceFolder}`, `${userHome}`, `${env:NAME}` and a leading `~` in the pythonPath
 * setting. Returns "" for an empty setting.
 */
export function expandPythonPath(
  raw: string | undefined,
  vars: { workspaceFolder?: string; home: string; env: Record<string, string | undefined> },
): string {
  let value = (raw ?? "").trim();
  if (value === "") {
    return "";
  }
  if (value === "~" || value.startsWith("~/")) {
    value = vars.home + value.slice(1);
  }
  return value.replace(/\$\{(workspaceFolder|userHome|env:([^}]+))\}/g, (_match, name: string, envName?: string) => {
    if (envName !== undefined) {
      return vars.env[envName] ?? "";
    }
    if (name === "userHome") {
      return vars.home;
    }
    return vars.workspaceFolder ?? "";
  });
}
