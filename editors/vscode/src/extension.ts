// Entry point: wires the session (the daemon connection), the conversations view, the chat panels, the
// status bar and the `chatd.*` commands. Everything chat-specific happens in the daemon; this stays thin.

import * as vscode from 'vscode';
import { ChatPanel } from './chatPanel';
import { ConversationInfo, describeError, ErrorCodes } from './protocol';
import { formatCost } from './render';
import { Session } from './session';
import { ConversationItem, ConversationsTree } from './tree';
import { ResponseError } from 'vscode-jsonrpc/node';

let session: Session | undefined;

export async function activate(ctx: vscode.ExtensionContext): Promise<void> {
  const log = vscode.window.createOutputChannel('chatd');
  session = new Session(log, String(ctx.extension.packageJSON.version ?? '0'));
  const s = session;
  const tree = new ConversationsTree(s);
  const status = vscode.window.createStatusBarItem('chatd.status', vscode.StatusBarAlignment.Right, 100);
  status.name = 'chatd';
  status.command = 'chatd.pickModel';
  const showStatus = () => {
    const p = ChatPanel.current;
    if (!s.client) {
      status.text = '$(debug-disconnect) chatd';
      status.tooltip = 'chatd is not connected: click to pick a model, or run "chatd: Reconnect to the Daemon"';
    } else if (p) {
      status.text = `$(comment-discussion) ${p.modelLabel()}${p.sentHere ? ` · ${formatCost(p.cost)}` : ''}`;
      status.tooltip = `chatd: "${p.name}", model ${p.modelLabel()}; replies sent from this window cost ${formatCost(p.cost) || '$0'}. Click to pick the model.`;
    } else {
      status.text = '$(comment-discussion) chatd';
      status.tooltip = 'chatd: click to pick the model for new chats';
    }
    status.show();
  };

  ctx.subscriptions.push(
    log, s, tree, status,
    vscode.window.registerTreeDataProvider('chatd.conversations', tree),
    ChatPanel.onDidChange(showStatus),
    s.onDidConnect(showStatus),
    s.onDidDisconnect(showStatus),
    { dispose: () => [...ChatPanel.panels.values()].forEach((p) => p.dispose()) },
  );
  showStatus();

  const open = (name: string) => ChatPanel.show(ctx, s, name);
  const target = (arg: unknown): string | undefined =>
    arg instanceof ConversationItem ? arg.info.name : typeof arg === 'string' ? arg : ChatPanel.current?.name;
  const guard = (fn: (...args: any[]) => Promise<unknown>) => async (...args: any[]) => {
    try {
      await fn(...args);
    } catch (err) {
      if (!(err instanceof ResponseError) && s.client === undefined) return; // the session already said why
      void vscode.window.showErrorMessage(`chatd: ${describeError(err)}`);
    }
  };
  const command = (id: string, fn: (...args: any[]) => Promise<unknown>) =>
    ctx.subscriptions.push(vscode.commands.registerCommand(id, guard(fn)));

  command('chatd.newChat', async (initial?: string) => {
    const client = await s.ensure();
    const name = await vscode.window.showInputBox({
      title: 'New chat', prompt: 'A name for the conversation (every chatd client sees it by this name)',
      value: typeof initial === 'string' ? initial : defaultName(), validateInput: validName,
    });
    if (!name) return;
    const model = vscode.workspace.getConfiguration('chatd').get<string>('model', '').trim();
    await client.request('conversation/create', { name, ...(model ? { preferModel: model } : {}) });
    open(name);
  });

  command('chatd.openChat', async (arg?: unknown) => {
    let name = target(arg);
    if (arg === undefined || name === undefined) {
      const client = await s.ensure();
      const convs = await client.listConversations();
      const pick = await vscode.window.showQuickPick(
        [{ label: '$(add) New chat…', name: '' }, ...convs.map((c) => ({ label: c.name, description: describe(c), name: c.name }))],
        { title: 'Open chat', placeHolder: 'Conversation' });
      if (!pick) return;
      if (!pick.name) return vscode.commands.executeCommand('chatd.newChat');
      name = pick.name;
    }
    open(name);
  });

  command('chatd.askAboutSelection', async () => {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.selection.isEmpty) {
      void vscode.window.showInformationMessage('chatd: select some code first.');
      return;
    }
    const question = await vscode.window.showInputBox({ title: 'Ask about the selection', prompt: 'Your question', value: 'Explain this code.' });
    if (question === undefined) return;
    const doc = editor.document;
    const sel = editor.selection;
    const file = vscode.workspace.asRelativePath(doc.uri, false);
    const lines = sel.start.line === sel.end.line ? `line ${sel.start.line + 1}` : `lines ${sel.start.line + 1}-${sel.end.line + 1}`;
    const fence = doc.getText(sel).includes('```') ? '````' : '```';
    const text = `${question}\n\nFrom \`${file}\` (${doc.languageId}), ${lines}:\n\n${fence}${doc.languageId}\n${doc.getText(sel)}\n${fence}`;
    let name = ChatPanel.current?.name;
    if (!name) {
      const client = await s.ensure();
      name = defaultName();
      await client.request('conversation/create', { name });
    }
    const panel = open(name);
    await panel.send(text);
  });

  command('chatd.cancel', async (arg?: unknown) => {
    const name = target(arg);
    if (!name) return;
    const client = await s.ensure();
    const r = await client.cancel(name);
    if (!r.cancelled) vscode.window.setStatusBarMessage(`chatd: nothing is running in "${name}"`, 3000);
  });

  command('chatd.pickModel', async () => {
    const client = await s.ensure();
    const models = await client.listModels();
    const current = ChatPanel.current;
    const items = models.map((m) => ({
      label: m.name,
      description: `${m.provider}${m.keyPresent ? '' : ' · no API key'}`,
      detail: m.inputPrice || m.outputPrice ? `$${m.inputPrice} in / $${m.outputPrice} out per million tokens · ${m.contextWindow.toLocaleString()} tokens` : `${m.contextWindow.toLocaleString()} tokens`,
      name: m.name,
    }));
    const pick = await vscode.window.showQuickPick(items, {
      title: current ? `Model for "${current.name}"` : 'Model for new chats', placeHolder: 'Model',
    });
    if (!pick) return;
    if (current) {
      await client.request('conversation/update', { name: current.name, preferModel: pick.name });
    } else {
      await vscode.workspace.getConfiguration('chatd').update('model', pick.name, vscode.ConfigurationTarget.Global);
    }
  });

  command('chatd.refresh', async () => tree.refresh());
  command('chatd.restart', async () => { await s.restart(); tree.refresh(); });
  command('chatd.showLog', async () => log.show());

  command('chatd.rename', async (arg?: unknown) => {
    const name = target(arg);
    if (!name) return;
    const newName = await vscode.window.showInputBox({ title: `Rename "${name}"`, value: name, validateInput: validName });
    if (!newName || newName === name) return;
    const client = await s.ensure();
    await client.request('conversation/update', { name, newName });
  });

  command('chatd.fork', async (arg?: unknown) => {
    const name = target(arg);
    if (!name) return;
    const newName = await vscode.window.showInputBox({ title: `Fork "${name}"`, prompt: 'Name of the copy', value: `${name} (fork)`, validateInput: validName });
    if (!newName) return;
    const client = await s.ensure();
    await client.request('conversation/fork', { name, newName });
    open(newName);
  });

  command('chatd.clear', async (arg?: unknown) => {
    const name = target(arg);
    if (!name) return;
    const ok = await vscode.window.showWarningMessage(`Clear every message of "${name}"? Its settings stay.`, { modal: true }, 'Clear');
    if (ok !== 'Clear') return;
    const client = await s.ensure();
    await client.request('conversation/clear', { name });
  });

  command('chatd.delete', async (arg?: unknown) => {
    const name = target(arg);
    if (!name) return;
    const ok = await vscode.window.showWarningMessage(`Delete "${name}" for every client?`, { modal: true }, 'Delete');
    if (ok !== 'Delete') return;
    const client = await s.ensure();
    try {
      await client.request('conversation/delete', { name });
    } catch (err) {
      if (!(err instanceof ResponseError && err.code === ErrorCodes.ConversationNotFound)) throw err;
    }
    ChatPanel.panels.get(name)?.dispose();
  });

  // Connect now so the conversations view fills; failures are reported by the session, once.
  void s.ensure().catch(() => undefined);
}

export function deactivate(): void {
  session?.dispose(); // ends this window's relay; the daemon and other clients' turns go on
  session = undefined;
}

function defaultName(): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  return `chat ${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function validName(name: string): string | undefined {
  if (!name || name.length > 200) return 'Between 1 and 200 characters';
  if (name !== name.trim()) return 'No spaces at the start or end';
  if (name === '*') return '"*" is reserved';
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return 'Printable characters only';
  return undefined;
}

function describe(c: ConversationInfo): string {
  return `${c.messageCount} messages${c.lastModel ? ` · ${c.lastModel}` : ''}`;
}
