// The EG-CFG extension: starts `<python> -m lsp_server`, shows the server's state in the status bar,
// turns streamed committed lines into growing ghost text, and adds the EG-CFG commands.
// Diagnostics and hovers come through the language client unchanged.
import { randomUUID } from "node:crypto";
import * as os from "node:os";
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  InlineCompletionRequest,
  LanguageClient,
  State,
  WorkDoneProgress,
  type LanguageClientOptions,
  type ServerOptions,
} from "vscode-languageclient/node";
import { checkFailureMessage, checkServerInstalled } from "./python";
import { registerSetup, type SetupFlow } from "./setup";
import { expandPythonPath, needsRestart, serverSettings } from "./settings";
import { clientStatusView, statusView, type ServerStatus, type StatusView } from "./status";
import { StreamRegistry, samePosition, type CompletionLine, type Stream } from "./streams";
import type { RegenerateAnswer } from "./review";
import { ReviewController } from "./reviewView";

const SERVER_COMMAND_COMPLETE = "egcfg.completeWithTests";
const SERVER_COMMAND_CANCEL = "egcfg.cancel";
const SERVER_COMMAND_TRACE = "egcfg.showTrace";
const SERVER_COMMAND_REGENERATE = "egcfg.regenerateFrom";
const PYTHON_SELECTOR: vscode.DocumentSelector = [
  { language: "python", scheme: "file" },
  { language: "python", scheme: "untitled" },
];

/** The answer of egcfg.completeWithTests (docs/protocol.md). */
interface CompleteResult {
  code?: string; // the body to put in place of `range`
  range?: { start: { line: number; character: number }; end: { line: number; character: number } };
  passed?: number;
  total?: number;
  agent?: number | string;
  guided?: boolean;
  note?: string;
  error?: string; // the run could not happen or was cancelled
}

/** A run this extension started (a command or an inline request) and how to stop it. */
interface Run {
  stream: Stream;
  cancel: vscode.CancellationTokenSource;
  viaCommand: boolean;
  progress?: vscode.Progress<{ message?: string; increment?: number }>; // the command's notification
}

class EgcfgExtension implements vscode.Disposable {
  private readonly log = vscode.window.createOutputChannel("EG-CFG", { log: true });
  private readonly statusItem = vscode.window.createStatusBarItem("egcfg.status", vscode.StatusBarAlignment.Right, 100);
  private readonly streams = new StreamRegistry();
  private readonly runs = new Map<string, Run>(); // by document uri
  private readonly contentWaiters = new Map<Stream, Array<() => void>>();
  private readonly disposables: vscode.Disposable[] = [];
  private client: LanguageClient | undefined;
  private python = "";
  private pythonRuns = false; // the last check found a working interpreter (setup may install into it)
  setup: SetupFlow | undefined; // "Set up EG-CFG" (setup.ts)
  private starting: Promise<void> | undefined;
  private readonly review = new ReviewController(this.log);
  private regenerating: { uri: string; line: number; progress: vscode.Progress<{ message?: string }> } | undefined;

  constructor() {
    this.statusItem.name = "EG-CFG";
    this.statusItem.command = "egcfg.showLog";
    this.disposables.push(
      this.log,
      this.statusItem,
      this.review,
      vscode.commands.registerCommand("egcfg.regenerateFromCursor", () => this.regenerateAtCursor()),
      vscode.languages.registerInlineCompletionItemProvider(PYTHON_SELECTOR, {
        provideInlineCompletionItems: (document, position, inlineContext, token) =>
          this.provideInlineCompletionItems(document, position, inlineContext, token),
      }),
      vscode.commands.registerCommand("egcfg.completeWithTestsAtCursor", () => this.completeWithTests()),
      vscode.commands.registerCommand("egcfg.cancelRun", () => this.cancelAll()),
      vscode.commands.registerCommand("egcfg.showTraceForLine", () => this.showTrace()),
      vscode.commands.registerCommand("egcfg.restartServer", () => this.restart()),
      vscode.commands.registerCommand("egcfg.showLog", () => this.log.show(true)),
      vscode.workspace.onDidChangeConfiguration((event) => this.onConfigurationChanged(event)),
      vscode.workspace.onDidChangeTextDocument((event) => this.onDocumentChanged(event)),
    );
  }

  // ---- server lifecycle -------------------------------------------------------------------

  /** Starts the server; commands wait for this instead of failing while it starts. */
  start(): Promise<void> {
    this.starting = this.startServer();
    return this.starting;
  }

  private async startServer(): Promise<void> {
    this.showStatus(clientStatusView("starting"));
    const { python, source } = await this.resolvePython();
    this.python = python;
    this.log.info(`Python interpreter: ${python} (from ${source})`);
    const workspaceFolder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const check = await checkServerInstalled(python, 30000, workspaceFolder);
    if (!check.ok) {
      const message = checkFailureMessage(python, check);
      this.log.error(message);
      this.showStatus(clientStatusView("missing", message));
      this.pythonRuns = check.reason !== "no-interpreter";
      void this.setup?.offer(message);
      return;
    }

    const serverOptions: ServerOptions = {
      command: python,
      args: ["-m", "lsp_server"],
      options: {
        cwd: workspaceFolder,
        env: { ...process.env, HF_HUB_DISABLE_PROGRESS_BARS: "1", TOKENIZERS_PARALLELISM: "false", PYTHONUNBUFFERED: "1" },
      },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: PYTHON_SELECTOR as LanguageClientOptions["documentSelector"],
      outputChannel: this.log,
      initializationOptions: await this.currentServerSettings(),
      middleware: {
        // The server's lenses and quick fixes name server commands; clicked in VS Code they get
        // this extension's UI (progress, ghost text, a reviewable edit) instead of a bare request.
        executeCommand: (command, args, next) => this.onServerCommand(command, args, next),
        // Inline completion goes through this extension's own provider (it streams and must not
        // cancel a running engine); the client's built-in provider stays silent.
        provideInlineCompletionItems: () => null,
      },
    };
    const client = new LanguageClient("egcfg", "EG-CFG", serverOptions, clientOptions);
    this.client = client;
    client.onNotification("egcfg/status", (status: ServerStatus) => this.onServerStatus(status));
    client.onNotification("egcfg/completionLine", (line: CompletionLine) => this.onCompletionLine(line));
    client.onDidChangeState((event) => {
      if (event.newState === State.Stopped && this.client === client) {
        this.showStatus(clientStatusView("stopped"));
        this.cancelAll(false);
      }
    });
    try {
      await client.start();
      this.log.info("EG-CFG server started");
    } catch (error) {
      this.log.error(`EG-CFG server failed to start: ${String(error)}`);
      this.showStatus(clientStatusView("stopped", `The server failed to start: ${String(error)}`));
    }
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.cancelAll(false);
    if (client) {
      try {
        await client.stop(3000);
      } catch (error) {
        this.log.warn(`stopping the server: ${String(error)}`);
      }
    }
  }

  async restart(): Promise<void> {
    this.log.info("Restarting the EG-CFG server");
    await this.stop();
    await this.start();
  }

  private async resolvePython(): Promise<{ python: string; source: string }> {
    const resource = vscode.window.activeTextEditor?.document.uri ?? vscode.workspace.workspaceFolders?.[0]?.uri;
    const configured = expandPythonPath(vscode.workspace.getConfiguration("egcfg", resource).get<string>("pythonPath"), {
      workspaceFolder: (resource && vscode.workspace.getWorkspaceFolder(resource)?.uri.fsPath) ?? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
      home: os.homedir(),
      env: process.env,
    });
    if (configured) {
      return { python: configured, source: "setting egcfg.pythonPath" };
    }
    const fromExtension = await pythonFromPythonExtension(resource);
    if (fromExtension) {
      return { python: fromExtension, source: "the Python extension's active interpreter" };
    }
    return { python: "python3", source: "default" };
  }

  currentPython(): { python: string; runs: boolean } {
    return { python: this.python, runs: this.pythonRuns };
  }

  /** The server's settings, with the project's interpreter (the Python extension's, when installed). */
  private async currentServerSettings() {
    const config = vscode.workspace.getConfiguration("egcfg");
    const settings: Record<string, unknown> = serverSettings((key) => config.get(key));
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const project = await pythonFromPythonExtension(folder);
    if (project) {
      settings.python = project;
    }
    return settings;
  }

  /** Tells a running server about a new project interpreter picked in the Python extension. */
  watchPythonExtension(): void {
    const extension = vscode.extensions.getExtension("ms-python.python");
    const api = extension?.isActive ? (extension.exports as PythonExtensionApi | undefined) : undefined;
    const event = api?.environments?.onDidChangeActiveEnvironmentPath;
    if (event) {
      this.disposables.push(event(() => void this.sendSettings()));
    }
  }

  private async sendSettings(): Promise<void> {
    if (this.client?.isRunning()) {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { egcfg: await this.currentServerSettings() },
      });
    }
  }

  private async onConfigurationChanged(event: vscode.ConfigurationChangeEvent): Promise<void> {
    if (!event.affectsConfiguration("egcfg")) {
      return;
    }
    if (needsRestart((section) => event.affectsConfiguration(section))) {
      await this.restart();
      return;
    }
    await this.sendSettings();
  }

  // ---- status -----------------------------------------------------------------------------

  private onServerStatus(status: ServerStatus): void {
    const view = statusView(status);
    this.showStatus(view);
    if (status.state === "loading") {
      // a command waits for the model (the server holds it until the load ends)
      this.runs.forEach((run) => run.progress?.report({ message: "loading model…" }));
      this.regenerating?.progress.report({ message: "loading model…" });
    }
    if (status.state === "running") {
      // the server reports its own work-done progress under a token it creates; the command's
      // notification shows the same news from the status
      const news = status.message || view.text.replace(/^\$\([^)]*\)\s*/, "");
      this.runs.forEach((run) => run.progress?.report({ message: news }));
    }
    if (status.state === "error" && status.message) {
      this.log.error(`server: ${status.message}`);
    }
  }

  private showStatus(view: StatusView): void {
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.backgroundColor =
      view.severity === "error"
        ? new vscode.ThemeColor("statusBarItem.errorBackground")
        : view.severity === "warning"
          ? new vscode.ThemeColor("statusBarItem.warningBackground")
          : undefined;
    this.statusItem.command = view.showLogOnClick ? "egcfg.showLog" : undefined;
    this.statusItem.show();
  }

  // ---- streaming ghost text ---------------------------------------------------------------

  private onCompletionLine(line: CompletionLine): void {
    const stream = this.streams.streamFor(line);
    this.log.debug(`completionLine ${line.requestId ?? ""} agent ${line.agent ?? ""} line ${line.lineNo}${stream ? "" : " (no stream waits for it)"}`);
    const regenerating = this.regenerating;
    if (!stream && regenerating && regenerating.uri === line.uri && line.position?.line === regenerating.line) {
      regenerating.progress.report({ message: `line ${line.lineNo}: ${line.text.trim()}` });
      return; // a regeneration streams into its progress; its lines replace old ones on review
    }
    if (!stream) {
      return; // a line from a run this client no longer waits for
    }
    if (stream.addLine(line)) {
      this.notifyContent(stream);
      this.retrigger(stream);
    }
  }

  /**
   * Asks VS Code to query the inline provider again: only when the ghost text gained a line.
   * VS Code does not re-ask a provider at the same cursor and document version after an explicit
   * trigger (the stable API has no "my items changed" event), so the shown item is hidden first;
   * both run in one message (`runCommands`) to keep the gap before the longer text short.
   */
  private retrigger(stream: Stream): void {
    const editor = vscode.window.activeTextEditor;
    // only where the suggestion applies: an explicit trigger elsewhere would start a new run
    if (editor && editor.document.uri.toString() === stream.uri && this.suggestionItems(stream, editor.document, editor.selection.active)) {
      void vscode.commands.executeCommand("runCommands", {
        commands: ["editor.action.inlineSuggest.hide", "editor.action.inlineSuggest.trigger"],
      });
    }
  }

  private notifyContent(stream: Stream): void {
    const waiters = this.contentWaiters.get(stream) ?? [];
    this.contentWaiters.delete(stream);
    waiters.forEach((wake) => wake());
  }

  private waitForContent(stream: Stream, token: vscode.CancellationToken, until: Promise<unknown>): Promise<void> {
    return new Promise((resolve) => {
      let listener: vscode.Disposable | undefined;
      const wake = () => {
        listener?.dispose();
        resolve();
      };
      const waiters = this.contentWaiters.get(stream) ?? [];
      waiters.push(wake);
      this.contentWaiters.set(stream, waiters);
      listener = token.onCancellationRequested(wake);
      until.then(wake, wake);
    });
  }

  private suggestionItems(stream: Stream, document: vscode.TextDocument, position: vscode.Position): vscode.InlineCompletionItem[] | undefined {
    const start = new vscode.Position(stream.start.line, stream.start.character);
    if (position.isBefore(start)) {
      return undefined;
    }
    const typed = document.getText(new vscode.Range(start, position));
    const suggestion = stream.suggestionAt(position, typed);
    if (!suggestion) {
      return undefined;
    }
    return [new vscode.InlineCompletionItem(suggestion.insertText, new vscode.Range(start, position))];
  }

  private async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    inlineContext: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[]> {
    const uri = document.uri.toString();
    const stream = this.streams.get(uri);
    if (stream) {
      const items = this.suggestionItems(stream, document, position);
      if (items) {
        return items; // from the buffer: a new request would cancel the run
      }
      if (stream.state === "running" && samePosition(stream.position, position)) {
        return []; // waiting for the first committed line
      }
    }
    // "Complete with tests" was asked for explicitly: typing elsewhere must not replace that run
    // (the server runs one completion at a time); an explicit trigger (Alt+\) still may.
    const commandRunning = [...this.runs.values()].some((run) => run.viaCommand);
    if (commandRunning && inlineContext.triggerKind === vscode.InlineCompletionTriggerKind.Automatic) {
      return [];
    }
    if (stream && stream.state !== "running") {
      this.streams.drop(uri, stream); // used up or no longer matching the text
    }
    const client = this.client;
    if (!client?.isRunning() || !client.initializeResult?.capabilities.inlineCompletionProvider) {
      return [];
    }
    return this.requestInline(client, document, position, inlineContext, token);
  }

  /** Starts a server inline request whose lifetime is ours, not VS Code's (see the module note). */
  private async requestInline(
    client: LanguageClient,
    document: vscode.TextDocument,
    position: vscode.Position,
    inlineContext: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionItem[]> {
    const uri = document.uri.toString();
    this.cancelRun(uri);
    const stream = this.streams.start(uri, { line: position.line, character: position.character }, document.version);
    const run: Run = { stream, cancel: new vscode.CancellationTokenSource(), viaCommand: false };
    this.runs.set(uri, run);
    const params = client.code2ProtocolConverter.asInlineCompletionParams(document, position, inlineContext);
    const request = client.sendRequest(InlineCompletionRequest.type, params, run.cancel.token).then(
      async (result) => {
        const converted = await client.protocol2CodeConverter.asInlineCompletionResult(result);
        const items = Array.isArray(converted) ? converted : (converted?.items ?? []);
        const first = items[0];
        const changed =
          first && typeof first.insertText === "string"
            ? stream.finish(first.insertText, first.range ? { line: first.range.start.line, character: first.range.start.character } : undefined)
            : stream.finish(undefined);
        this.endRun(uri, run);
        this.notifyContent(stream);
        if (changed) {
          this.retrigger(stream);
        }
      },
      (error) => {
        stream.finish(undefined);
        this.endRun(uri, run);
        this.notifyContent(stream);
        if (!run.cancel.token.isCancellationRequested) {
          this.log.warn(`inline completion failed: ${String(error)}`);
        }
      },
    );
    await this.waitForContent(stream, token, request);
    if (token.isCancellationRequested) {
      return [];
    }
    return this.suggestionItems(stream, document, position) ?? [];
  }

  // ---- commands ---------------------------------------------------------------------------

  private async requireClient(): Promise<LanguageClient | undefined> {
    await this.starting;
    if (this.client?.isRunning()) {
      return this.client;
    }
    void vscode.window.showErrorMessage('EG-CFG: the server is not running. See "EG-CFG: Show log", or run "EG-CFG: Restart server".');
    return undefined;
  }

  /** A server command named by a lens or a quick fix, run with this extension's UI. */
  private async onServerCommand(command: string, args: unknown[], next: (command: string, args: unknown[]) => unknown): Promise<unknown> {
    const target = (args?.[0] ?? {}) as { uri?: string; line?: number; character?: number };
    if (typeof target.uri !== "string" || typeof target.line !== "number") {
      return next(command, args);
    }
    if (command === SERVER_COMMAND_REGENERATE) {
      return this.regenerate(vscode.Uri.parse(target.uri), target.line);
    }
    if (command === SERVER_COMMAND_COMPLETE || command === SERVER_COMMAND_TRACE) {
      const editor = await vscode.window.showTextDocument(vscode.Uri.parse(target.uri));
      const at = new vscode.Position(target.line, target.character ?? 0);
      editor.selection = new vscode.Selection(at, at);
      return command === SERVER_COMMAND_COMPLETE ? this.completeWithTests() : this.showTrace();
    }
    return next(command, args);
  }

  private async regenerateAtCursor(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== "python") {
      void vscode.window.showInformationMessage("EG-CFG: put the cursor on a line of a Python function first.");
      return;
    }
    await this.regenerate(editor.document.uri, editor.selection.active.line);
  }

  /**
   * egcfg.regenerateFrom: keeps the function's lines above `line`, has the rest written again
   * (streamed into the progress), then applies it as one edit under review (Keep / Reject).
   */
  private async regenerate(uri: vscode.Uri, line: number): Promise<void> {
    const client = await this.requireClient();
    if (!client) {
      return;
    }
    const document = await vscode.workspace.openTextDocument(uri);
    const key = uri.toString();
    this.cancelRun(key);
    const cancel = new vscode.CancellationTokenSource();
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `EG-CFG: regenerating from line ${line + 1}`, cancellable: true },
      async (progress, progressToken) => {
        progressToken.onCancellationRequested(() => {
          cancel.cancel();
          void client.sendRequest(ExecuteCommandRequest.type, { command: SERVER_COMMAND_CANCEL, arguments: [{}] });
        });
        this.regenerating = { uri: key, line, progress };
        progress.report({ message: "starting the guided run" });
        try {
          const answer: RegenerateAnswer | null = await client.sendRequest(
            ExecuteCommandRequest.type,
            { command: SERVER_COMMAND_REGENERATE, arguments: [{ uri: key, line }] },
            cancel.token,
          );
          if (!cancel.token.isCancellationRequested && answer) {
            this.log.info(`Regenerate from line ${line + 1}: ${answer.error ?? `${answer.passed ?? 0}/${answer.total ?? 0} tests pass`}`);
            await this.review.apply(document, answer);
          }
        } catch (error) {
          if (!cancel.token.isCancellationRequested) {
            void vscode.window.showErrorMessage(`EG-CFG: ${errorMessage(error)}`);
          }
        } finally {
          this.regenerating = undefined;
          cancel.dispose();
        }
      },
    );
  }

  private async completeWithTests(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== "python") {
      void vscode.window.showInformationMessage("EG-CFG: put the cursor inside a Python function first.");
      return;
    }
    const client = await this.requireClient();
    if (!client) {
      return;
    }
    const document = editor.document;
    const uri = document.uri.toString();
    const position = editor.selection.active;
    this.cancelRun(uri);
    const stream = this.streams.start(uri, { line: position.line, character: position.character }, document.version);
    const run: Run = { stream, cancel: new vscode.CancellationTokenSource(), viaCommand: true };
    this.runs.set(uri, run);
    await vscode.commands.executeCommand("setContext", "egcfg.running", true);

    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "EG-CFG", cancellable: true },
      async (progress, progressToken) => {
        progressToken.onCancellationRequested(() => this.cancelRun(uri));
        run.progress = progress;
        const workDoneToken = randomUUID();
        let reported = 0;
        const progressListener = client.onProgress(WorkDoneProgress.type, workDoneToken, (value) => {
          if (value.kind === "end") {
            return;
          }
          const percentage = typeof value.percentage === "number" ? value.percentage : reported;
          progress.report({ message: value.message, increment: Math.max(0, percentage - reported) });
          reported = Math.max(reported, percentage);
        });
        progress.report({ message: "starting the guided run" });
        try {
          const result: CompleteResult | null = await client.sendRequest(
            ExecuteCommandRequest.type,
            {
              command: SERVER_COMMAND_COMPLETE,
              arguments: [{ uri, line: position.line, character: position.character }],
              workDoneToken,
            },
            run.cancel.token,
          );
          if (run.cancel.token.isCancellationRequested) {
            return;
          }
          if (result?.error || !result?.code) {
            stream.cancel();
            this.streams.drop(uri, stream);
            if (result?.error && result.error !== "cancelled") {
              void vscode.window.showErrorMessage(`EG-CFG: ${result.error}`);
            }
            return;
          }
          this.log.info(`Complete with tests: ${resultMessage(result)} (${stream.lines} line(s) streamed)`);
          if (stream.finish(result.code, result.range?.start)) {
            this.retrigger(stream); // the final answer differs from what was streamed
          }
          vscode.window.setStatusBarMessage(resultMessage(result), 15000);
        } catch (error) {
          if (!run.cancel.token.isCancellationRequested) {
            stream.cancel();
            this.log.error(`Complete with tests failed: ${String(error)}`);
            void vscode.window.showErrorMessage(`EG-CFG: ${errorMessage(error)}`);
          }
        } finally {
          progressListener.dispose();
          this.endRun(uri, run);
        }
      },
    );
  }

  private endRun(uri: string, run: Run): void {
    if (this.runs.get(uri) === run) {
      this.runs.delete(uri);
    }
    run.cancel.dispose();
    if (this.runs.size === 0) {
      void vscode.commands.executeCommand("setContext", "egcfg.running", false);
    }
  }

  /** Stops the run for a document: cancels the request and tells the server to stop the engine. */
  private cancelRun(uri: string): void {
    const run = this.runs.get(uri);
    if (!run) {
      return;
    }
    this.runs.delete(uri);
    run.stream.cancel();
    this.streams.drop(uri, run.stream);
    run.cancel.cancel();
    this.notifyContent(run.stream);
    if (run.viaCommand && this.client?.isRunning()) {
      // an inline request is stopped by its $/cancelRequest; a command run also gets egcfg.cancel
      this.client
        .sendRequest(ExecuteCommandRequest.type, { command: SERVER_COMMAND_CANCEL, arguments: [{}] })
        .then(undefined, (error) => this.log.warn(`egcfg.cancel: ${String(error)}`));
    }
  }

  private cancelAll(tellUser = true): void {
    const uris = [...this.runs.keys()];
    uris.forEach((uri) => this.cancelRun(uri));
    if (tellUser && uris.length === 0) {
      vscode.window.setStatusBarMessage("EG-CFG: nothing is running", 3000);
    }
    void vscode.commands.executeCommand("setContext", "egcfg.running", false);
  }

  private async showTrace(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    const client = editor && (await this.requireClient());
    if (!editor || !client) {
      return;
    }
    const uri = editor.document.uri.toString();
    const line = editor.selection.active.line;
    try {
      const answer: { markdown?: string; found?: boolean } | string | null = await client.sendRequest(ExecuteCommandRequest.type, {
        command: SERVER_COMMAND_TRACE,
        arguments: [{ uri, line }],
      });
      const markdown = typeof answer === "string" ? answer : (answer?.markdown ?? "");
      const content =
        markdown.trim() !== ""
          ? markdown
          : `No trace for line ${line + 1}: it is not in a tested function, or the tests have not run on the current text yet (they run on open and save).`;
      const document = await vscode.workspace.openTextDocument({ language: "markdown", content });
      await vscode.window.showTextDocument(document, { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true, preview: true });
    } catch (error) {
      void vscode.window.showErrorMessage(`EG-CFG: ${errorMessage(error)}`);
    }
  }

  /** Edits above a stream's anchor move the text it was computed for: that stream is void. */
  private onDocumentChanged(event: vscode.TextDocumentChangeEvent): void {
    const uri = event.document.uri.toString();
    const stream = this.streams.get(uri);
    if (!stream || event.contentChanges.length === 0) {
      return;
    }
    const start = new vscode.Position(stream.start.line, stream.start.character);
    if (event.contentChanges.some((change) => change.range.start.isBefore(start))) {
      if (this.runs.get(uri)?.stream === stream) {
        this.cancelRun(uri);
      } else {
        this.streams.drop(uri, stream);
      }
    }
  }

  dispose(): void {
    this.disposables.forEach((disposable) => disposable.dispose());
  }
}

function resultMessage(result: CompleteResult): string {
  const tests =
    typeof result.total === "number" && result.total > 0 ? `${result.passed ?? 0}/${result.total} tests pass` : result.note || "no tests found";
  return `EG-CFG: ${tests}${result.agent !== undefined ? ` (agent ${result.agent})` : ""}. Tab accepts the suggestion.`;
}

function errorMessage(error: unknown): string {
  if (error && typeof error === "object" && "message" in error) {
    return String((error as { message: unknown }).message);
  }
  return String(error);
}

/** The Python extension's active interpreter for a resource, when that extension is installed. */
async function pythonFromPythonExtension(resource: vscode.Uri | undefined): Promise<string | undefined> {
  const extension = vscode.extensions.getExtension("ms-python.python");
  if (!extension) {
    return undefined;
  }
  try {
    const api = (extension.isActive ? extension.exports : await extension.activate()) as PythonExtensionApi | undefined;
    const environmentPath = api?.environments?.getActiveEnvironmentPath(resource);
    if (environmentPath) {
      const resolved = await api?.environments?.resolveEnvironment(environmentPath);
      const executable = resolved?.executable?.uri?.fsPath ?? environmentPath.path;
      if (executable) {
        return executable;
      }
    }
    return api?.settings?.getExecutionDetails?.(resource)?.execCommand?.[0];
  } catch {
    return undefined;
  }
}

/** The part of the Python extension's API used here. */
interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { id: string; path: string } | undefined;
    onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
    resolveEnvironment(environment: { id: string; path: string }): Promise<{ executable?: { uri?: vscode.Uri } } | undefined>;
  };
  settings?: {
    getExecutionDetails?(resource?: vscode.Uri): { execCommand?: string[] } | undefined;
  };
}

let extension: EgcfgExtension | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const created = new EgcfgExtension();
  extension = created;
  created.setup = registerSetup(vscode, context, { currentPython: () => created.currentPython(), restart: () => created.restart() });
  context.subscriptions.push(extension);
  void extension.start(); // activation does not wait for the server
  created.watchPythonExtension();
}

export async function deactivate(): Promise<void> {
  await extension?.stop();
  extension = undefined;
}
