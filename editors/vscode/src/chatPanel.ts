// One chat webview per conversation: subscribes to the conversation, shows its transcript and any turn in
// flight (whoever sent it), streams deltas, sends prompts, stops turns. Rendering lives in chatHtml/render.

import * as vscode from 'vscode';
import {
  ChatdClient, ConversationInfo, describeError, ErrorCodes, Message, isCancelled,
} from './protocol';
import { Item, messageItems, pageHtml, ReplyInfo, replyMeta, toolCallHtml, toolResultHtml } from './chatHtml';
import { formatCost, renderMarkdown } from './render';
import type { Session } from './session';
import { EDITOR_TOOL_NAMES } from './tools';
import { ResponseError } from 'vscode-jsonrpc/node';

interface LiveTurn { turnId: string; model: string; text: string; extras: string[]; rendered: boolean }

type FromWebview =
  | { type: 'ready' } | { type: 'send'; text: string } | { type: 'stop' } | { type: 'pickModel' }
  | { type: 'copy'; code: string } | { type: 'insert'; code: string } | { type: 'openLink'; href: string };

export class ChatPanel implements vscode.Disposable {
  static readonly panels = new Map<string, ChatPanel>();
  static current: ChatPanel | undefined;
  private static readonly changed = new vscode.EventEmitter<ChatPanel | undefined>();
  /** Fires when the focused chat or its model/cost changes (the status bar follows it). */
  static readonly onDidChange = ChatPanel.changed.event;

  info: ConversationInfo | undefined;
  get sentHere(): number { return this.replies.size; }
  cost = 0; // what replies sent from this window cost (the daemon reports cost only to the sender)
  private readonly replies = new Map<string, ReplyInfo>();
  private live: LiveTurn | undefined;
  private loaded = false;
  private renderTimer: NodeJS.Timeout | undefined;
  private readonly subs: vscode.Disposable[] = [];
  private clientSubs: vscode.Disposable[] = [];
  private lastEditor: vscode.TextEditor | undefined = vscode.window.activeTextEditor;
  private markReady!: () => void;
  /** Settles when the first load has finished (sends wait for it, so their turn shows from the start). */
  private readonly ready = new Promise<void>((resolve) => { this.markReady = resolve; });

  static show(ctx: vscode.ExtensionContext, session: Session, name: string): ChatPanel {
    const existing = ChatPanel.panels.get(name);
    if (existing) {
      existing.panel.reveal();
      return existing;
    }
    const panel = vscode.window.createWebviewPanel('chatd.chat', name, vscode.ViewColumn.Beside, {
      enableScripts: true,
      retainContextWhenHidden: true,
      localResourceRoots: [vscode.Uri.joinPath(ctx.extensionUri, 'media')],
    });
    return new ChatPanel(ctx, session, name, panel);
  }

  private constructor(
    ctx: vscode.ExtensionContext, private readonly session: Session, public name: string,
    readonly panel: vscode.WebviewPanel,
  ) {
    ChatPanel.panels.set(name, this);
    ChatPanel.current = this;
    panel.iconPath = vscode.Uri.joinPath(ctx.extensionUri, 'media', 'chatd.svg');
    const media = (f: string) => panel.webview.asWebviewUri(vscode.Uri.joinPath(ctx.extensionUri, 'media', f)).toString();
    panel.webview.html = pageHtml({
      cspSource: panel.webview.cspSource, scriptUri: media('chat.js'), styleUri: media('chat.css'), title: name,
    });
    this.subs.push(
      panel.webview.onDidReceiveMessage((m: FromWebview) => this.onMessage(m)),
      panel.onDidDispose(() => this.dispose()),
      panel.onDidChangeViewState(() => {
        if (panel.active) { ChatPanel.current = this; ChatPanel.changed.fire(this); }
      }),
      vscode.window.onDidChangeActiveTextEditor((e) => { if (e) this.lastEditor = e; }),
      session.onDidConnect(() => void this.load()),
      session.onDidDisconnect(() => this.post({ type: 'notice', kind: 'error', text: 'Disconnected from chatd. Run "chatd: Reconnect to the Daemon".' })),
    );
  }

  // ---------------------------------------------------------------- webview to host
  private async onMessage(m: FromWebview): Promise<void> {
    switch (m.type) {
      case 'ready': await this.load(); break;
      case 'send': await this.send(m.text); break;
      case 'stop': await this.stop(); break;
      case 'pickModel': await vscode.commands.executeCommand('chatd.pickModel'); break;
      case 'copy':
        await vscode.env.clipboard.writeText(m.code);
        vscode.window.setStatusBarMessage('chatd: code copied', 2000);
        break;
      case 'insert': await this.insert(m.code); break;
      case 'openLink':
        if (/^(https?:|mailto:)/i.test(m.href)) await vscode.env.openExternal(vscode.Uri.parse(m.href));
        break;
    }
  }

  private async insert(code: string): Promise<void> {
    const editor = this.lastEditor ?? vscode.window.visibleTextEditors[0];
    if (!editor || editor.document.isClosed) {
      void vscode.window.showWarningMessage('chatd: open a file to insert the code into.');
      return;
    }
    await vscode.window.showTextDocument(editor.document, editor.viewColumn);
    await editor.edit((b) => editor.selections.forEach((s) => b.replace(s, code)));
  }

  private post(message: Record<string, unknown>): void {
    void this.panel.webview.postMessage(message);
  }

  // ---------------------------------------------------------------- loading and notifications
  /** (Re)subscribe and show the conversation as stored, plus the turn in flight if there is one. */
  async load(): Promise<void> {
    let client: ChatdClient;
    try {
      client = await this.session.ensure();
    } catch {
      this.post({ type: 'notice', kind: 'error', text: 'chatd is not running: see the message in the corner.' });
      this.markReady();
      return;
    }
    this.loaded = false;
    this.clientSubs.forEach((s) => s.dispose());
    this.clientSubs = [
      client.on('chat/turnStarted', (n) => this.mine(n.conversation) && this.turnStarted(n.turnId, n.model, n.user)),
      client.on('chat/delta', (n) => {
        if (!this.mine(n.conversation) || !this.live || this.live.turnId !== n.turnId) return;
        this.live.text += n.text;
        this.renderSoon();
      }),
      client.on('chat/attempt', (n) => {
        if (!this.mine(n.conversation) || !this.live) return;
        this.live.text = ''; // the failed try's text is void
        this.renderNow();
        const next = n.next === 'retry' ? `retrying in ${n.delayS.toFixed(1)} s` : n.next === 'fallback' ? 'falling back to the next model' : 'giving up';
        this.post({ type: 'notice', turnId: n.turnId, kind: 'warn', text: `${n.model} failed${n.reason ? `: ${n.reason}` : ''}; ${next}` });
      }),
      client.on('chat/toolCall', (n) => {
        if (!this.mine(n.conversation) || !this.live) return;
        this.live.extras.push(toolCallHtml(n.tool, n.arguments, 'running'));
        this.post({ type: 'turnExtra', turnId: n.turnId, html: this.live.extras.join('') });
      }),
      client.on('chat/toolResult', (n) => {
        if (!this.mine(n.conversation) || !this.live) return;
        const note = n.decision && n.decision !== 'allow' ? ` (${n.decision})` : '';
        this.live.extras.push(toolResultHtml(`${n.tool}${note}`, n.output, n.isError));
        this.post({ type: 'turnExtra', turnId: n.turnId, html: this.live.extras.join('') });
      }),
      client.on('chat/turnEnded', (n) => {
        if (!this.mine(n.conversation)) return;
        if (n.outcome !== 'committed' && this.live?.turnId === n.turnId) {
          const text = n.outcome === 'cancelled' ? 'Stopped: nothing of this turn was saved.' : `Failed: ${n.error ?? 'the model call failed'}`;
          this.post({ type: 'turnEnded', turnId: n.turnId, outcome: n.outcome, text });
        }
        if (this.live?.turnId === n.turnId) this.live = undefined;
        this.post({ type: 'busy', busy: false });
      }),
      client.on('conversation/changed', (n) => void this.changed(n.kind, n.name, n.oldName ?? undefined, n.messages)),
    ];
    try {
      const state = await client.subscribe(this.name);
      this.info = state.conversation;
      this.loaded = true;
      this.live = undefined;
      this.post({ type: 'reset', title: this.name, items: messageItems(state.messages, this.replies) });
      if (state.activeTurn) {
        const t = state.activeTurn;
        this.turnStarted(t.turnId, t.model, t.user);
        this.live!.text = t.text;
        this.renderNow();
      } else {
        this.post({ type: 'busy', busy: false });
      }
      this.header();
    } catch (err) {
      const gone = err instanceof ResponseError && err.code === ErrorCodes.ConversationNotFound;
      this.post({ type: 'notice', kind: 'error', text: gone ? `There is no conversation named "${this.name}" (deleted elsewhere?).` : describeError(err) });
    } finally {
      this.markReady();
    }
  }

  private mine(conversation: string): boolean {
    return this.loaded && conversation === this.name;
  }

  private turnStarted(turnId: string, model: string, user: Message): void {
    this.live = { turnId, model, text: '', extras: [], rendered: false };
    const userItem: Item = { key: `turn-${turnId}-user`, role: 'user', html: renderMarkdown(user.text) };
    this.post({ type: 'turnStarted', turnId, model, user: userItem });
    this.post({ type: 'busy', busy: true });
  }

  /** Deltas arrive word by word: render at most every 40 ms (re-rendering the whole reply keeps markdown right). */
  private renderSoon(): void {
    if (this.renderTimer) return;
    this.renderTimer = setTimeout(() => this.renderNow(), 40);
  }

  private renderNow(): void {
    clearTimeout(this.renderTimer);
    this.renderTimer = undefined;
    if (this.live) this.post({ type: 'turnText', turnId: this.live.turnId, html: renderMarkdown(this.live.text) });
  }

  private async changed(kind: string, name: string, oldName: string | undefined, messages: Message[]): Promise<void> {
    if (kind === 'renamed' && oldName === this.name && this.loaded) {
      ChatPanel.panels.delete(this.name);
      this.name = name;
      ChatPanel.panels.set(name, this);
      this.panel.title = name;
      await this.refreshInfo();
      return;
    }
    if (!this.mine(name)) return;
    switch (kind) {
      case 'turn': {
        clearTimeout(this.renderTimer);
        this.renderTimer = undefined;
        const turnId = messages.find((m) => m.turnId)?.turnId ?? this.live?.turnId ?? `seq-${messages[0]?.seq}`;
        this.post({ type: 'committed', turnId, items: messageItems(messages, this.replies) });
        if (this.live?.turnId === turnId) this.live = undefined;
        await this.refreshInfo();
        break;
      }
      case 'cleared':
        this.post({ type: 'reset', title: this.name, items: [] });
        await this.refreshInfo();
        break;
      case 'deleted':
        this.loaded = false;
        this.post({ type: 'notice', kind: 'error', text: `"${this.name}" was deleted.` });
        this.post({ type: 'busy', busy: false });
        break;
      case 'updated':
        await this.refreshInfo();
        break;
    }
  }

  private async refreshInfo(): Promise<void> {
    try {
      const client = await this.session.ensure();
      const r = await client.request<{ conversation: ConversationInfo }>('conversation/get', { name: this.name, afterSeq: 1 << 30 });
      this.info = r.conversation;
      this.header();
    } catch { /* the header keeps what it had */ }
  }

  modelLabel(): string {
    const i = this.info;
    if (!i) return '';
    const prefer = i.preferModel !== 'last' && i.preferModel !== 'weighted' ? i.preferModel : undefined;
    return prefer ?? i.lastModel ?? i.models[0] ?? 'default model';
  }

  private header(): void {
    this.post({ type: 'header', title: this.name, model: this.modelLabel(), cost: this.replies.size ? `${formatCost(this.cost)} this session` : '' });
    ChatPanel.changed.fire(this);
  }

  // ---------------------------------------------------------------- sending and stopping
  async send(text: string): Promise<void> {
    await this.ready;
    let client: ChatdClient;
    try {
      client = await this.session.ensure();
    } catch {
      return;
    }
    const tools = vscode.workspace.getConfiguration('chatd').get<boolean>('clientTools', true) ? EDITOR_TOOL_NAMES : undefined;
    try {
      const r = await client.send({ conversation: this.name, text, ...(tools ? { tools } : {}) });
      const info: ReplyInfo = { cost: r.cost, inputTokens: r.usage.inputTokens, outputTokens: r.usage.outputTokens, latencyMs: r.latencyMs };
      this.replies.set(r.turnId, info);
      this.cost += r.cost;
      const fallback = r.attempts.length > 1 ? ` · after ${r.attempts.length - 1} failed attempt(s)` : '';
      this.post({ type: 'meta', turnId: r.turnId, text: replyMeta(r.modelUsed, info) + fallback });
      this.header();
    } catch (err) {
      if (isCancelled(err)) return; // chat/turnEnded already said so
      if (err instanceof ResponseError && err.code === ErrorCodes.TurnFailed) return; // shown by chat/turnEnded
      this.post({ type: 'notice', kind: 'error', text: `chatd: ${describeError(err)}` });
      this.post({ type: 'busy', busy: false });
    }
  }

  async stop(): Promise<void> {
    try {
      const client = await this.session.ensure();
      await client.cancel(this.name);
    } catch (err) {
      this.post({ type: 'notice', kind: 'error', text: describeError(err) });
    }
  }

  prefill(text: string): void {
    this.post({ type: 'prefill', text });
  }

  private disposed = false;

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    ChatPanel.panels.delete(this.name);
    if (ChatPanel.current === this) ChatPanel.current = undefined;
    ChatPanel.changed.fire(ChatPanel.current);
    clearTimeout(this.renderTimer);
    this.clientSubs.forEach((s) => s.dispose());
    this.subs.forEach((s) => s.dispose());
    const client = this.session.client;
    if (client && !client.isClosed) void client.unsubscribe(this.name).catch(() => undefined);
    this.panel.dispose();
  }
}
