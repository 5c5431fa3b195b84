// The VS Code side of a regenerated body under review (logic in review.ts): the edit, the
// highlight of the new lines, Keep / Reject / Compare lenses above them, and the commands.
import * as vscode from "vscode";
import {
  applyProblem,
  followChange,
  lineCount,
  rejectEdit,
  reviewMessage,
  startReview,
  type RegenerateAnswer,
  type Review,
} from "./review";

const SCHEME = "egcfg-before";

export class ReviewController implements vscode.Disposable, vscode.CodeLensProvider, vscode.TextDocumentContentProvider {
  private readonly reviews = new Map<string, Review>(); // by document uri
  private readonly appliedVersions = new Map<string, number>(); // the document version our edit made
  private readonly lensesChanged = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.lensesChanged.event;
  private readonly highlight = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor("diffEditor.insertedLineBackground"),
    overviewRulerColor: new vscode.ThemeColor("editorOverviewRuler.addedForeground"),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly disposables: vscode.Disposable[];

  constructor(private readonly log: vscode.LogOutputChannel) {
    this.disposables = [
      this.highlight,
      this.lensesChanged,
      vscode.languages.registerCodeLensProvider([{ language: "python" }], this),
      vscode.workspace.registerTextDocumentContentProvider(SCHEME, this),
      vscode.commands.registerCommand("egcfg.keepRegenerated", (uri?: string) => this.keep(uri)),
      vscode.commands.registerCommand("egcfg.rejectRegenerated", (uri?: string) => this.reject(uri)),
      vscode.commands.registerCommand("egcfg.compareRegenerated", (uri?: string) => this.compare(uri)),
      vscode.workspace.onDidChangeTextDocument((event) => this.onChanged(event)),
      vscode.workspace.onDidCloseTextDocument((document) => this.end(document.uri.toString())),
      vscode.window.onDidChangeVisibleTextEditors(() => this.decorate()),
    ];
  }

  /** Applies a regenerated body as one edit and starts its review; false (and a message) if it cannot. */
  async apply(document: vscode.TextDocument, answer: RegenerateAnswer): Promise<boolean> {
    const range = answer.range
      ? new vscode.Range(answer.range.start.line, 0, answer.range.end.line, 0)
      : undefined;
    const problem = applyProblem(answer, range ? document.getText(range) : "");
    if (problem || !range) {
      if (problem !== "cancelled") {
        void vscode.window.showErrorMessage(`EG-CFG: ${problem}`);
      }
      return false;
    }
    const uri = document.uri.toString();
    this.end(uri);
    const edit = new vscode.WorkspaceEdit();
    edit.replace(document.uri, range, answer.code ?? "");
    if (!(await vscode.workspace.applyEdit(edit))) {
      void vscode.window.showErrorMessage("EG-CFG: VS Code did not apply the regenerated body.");
      return false;
    }
    const review = startReview(uri, answer);
    this.reviews.set(uri, review);
    this.appliedVersions.set(uri, document.version); // changes up to it are the edit itself
    this.changed();
    this.log.info(reviewMessage(review));
    void vscode.window.showInformationMessage(reviewMessage(review), "Keep", "Reject", "Compare").then((choice) => {
      if (choice === "Keep") void this.keep(uri);
      if (choice === "Reject") void this.reject(uri);
      if (choice === "Compare") void this.compare(uri);
    });
    return true;
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const review = this.reviews.get(document.uri.toString());
    if (!review) {
      return [];
    }
    const at = new vscode.Range(review.startLine, 0, review.startLine, 0);
    const uri = review.uri;
    return [
      new vscode.CodeLens(at, { title: "$(check) Keep regenerated lines", command: "egcfg.keepRegenerated", arguments: [uri] }),
      new vscode.CodeLens(at, { title: "$(discard) Reject (restore the old lines)", command: "egcfg.rejectRegenerated", arguments: [uri] }),
      new vscode.CodeLens(at, { title: "Compare", command: "egcfg.compareRegenerated", arguments: [uri] }),
    ];
  }

  /** The document as it was before the edit (left side of Compare). */
  provideTextDocumentContent(uri: vscode.Uri): string {
    const target = decodeURIComponent(uri.query);
    const review = this.reviews.get(target);
    const document = vscode.workspace.textDocuments.find((d) => d.uri.toString() === target);
    if (!review || !document) {
      return "";
    }
    const lines = document.getText().split("\n");
    const count = lineCount(review.newText);
    const before = lines.slice(0, review.startLine).join("\n");
    const after = lines.slice(review.startLine + count).join("\n");
    return `${before}${review.startLine > 0 ? "\n" : ""}${review.oldText}${after}`;
  }

  pending(uri: string): Review | undefined {
    return this.reviews.get(uri);
  }

  private target(uri?: string): string | undefined {
    return uri ?? vscode.window.activeTextEditor?.document.uri.toString();
  }

  async keep(uri?: string): Promise<void> {
    const target = this.target(uri);
    if (target && this.reviews.has(target)) {
      this.end(target);
      vscode.window.setStatusBarMessage("EG-CFG: kept the regenerated lines", 4000);
    }
  }

  async reject(uri?: string): Promise<void> {
    const target = this.target(uri);
    const review = target ? this.reviews.get(target) : undefined;
    const document = vscode.workspace.textDocuments.find((d) => d.uri.toString() === target);
    if (!review || !document || !target) {
      return;
    }
    const plan = rejectEdit(review, document.getText().split("\n"));
    if ("refused" in plan) {
      void vscode.window.showWarningMessage(`EG-CFG: ${plan.refused}.`);
      return;
    }
    const edit = new vscode.WorkspaceEdit();
    edit.replace(document.uri, new vscode.Range(plan.startLine, 0, plan.endLine, 0), plan.text);
    this.end(target); // before the edit: its change event must not mark the review touched
    if (await vscode.workspace.applyEdit(edit)) {
      vscode.window.setStatusBarMessage("EG-CFG: restored the old lines", 4000);
    }
  }

  async compare(uri?: string): Promise<void> {
    const target = this.target(uri);
    const review = target ? this.reviews.get(target) : undefined;
    if (!review || !target) {
      return;
    }
    const left = vscode.Uri.from({ scheme: SCHEME, path: vscode.Uri.parse(target).path, query: encodeURIComponent(target) });
    await vscode.commands.executeCommand("vscode.diff", left, vscode.Uri.parse(target), `${review.functionName}: before ↔ regenerated`);
  }

  private onChanged(event: vscode.TextDocumentChangeEvent): void {
    const uri = event.document.uri.toString();
    let review = this.reviews.get(uri);
    if (!review || event.contentChanges.length === 0 || event.document.version <= (this.appliedVersions.get(uri) ?? -1)) {
      return;
    }
    for (const change of event.contentChanges) {
      review = followChange(review, {
        startLine: change.range.start.line,
        endLine: change.range.end.line,
        insertedNewlines: (change.text.match(/\n/g) ?? []).length,
      });
    }
    this.reviews.set(uri, review);
    this.changed();
  }

  private end(uri: string): void {
    if (this.reviews.delete(uri)) {
      this.changed();
    }
  }

  private changed(): void {
    this.decorate();
    this.lensesChanged.fire();
    void vscode.commands.executeCommand("setContext", "egcfg.reviewing", this.reviews.size > 0);
  }

  private decorate(): void {
    for (const editor of vscode.window.visibleTextEditors) {
      const review = this.reviews.get(editor.document.uri.toString());
      const ranges = review
        ? [new vscode.Range(review.startLine, 0, review.startLine + Math.max(lineCount(review.newText), 1) - 1, 0)]
        : [];
      editor.setDecorations(this.highlight, ranges);
    }
  }

  dispose(): void {
    this.disposables.forEach((disposable) => disposable.dispose());
  }
}
