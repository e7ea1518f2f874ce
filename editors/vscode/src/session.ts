// The extension's one connection to the daemon: finds `chatd`, connects (spawned `chatd stdio` or the
// socket from `chatd.socket`), follows every conversation (`conversation/subscribe {name: "*"}`), registers
// the editor tools, and turns every way of failing into one actionable message.

import * as vscode from 'vscode';
import { ChatdClient, ConnectError, Transport } from './protocol';
import { findChatd } from './discovery';
import { registerEditorTools } from './tools';

export class Session implements vscode.Disposable {
  client: ChatdClient | undefined;
  private connecting: Promise<ChatdClient> | undefined;
  private readonly connected = new vscode.EventEmitter<ChatdClient>();
  private readonly disconnected = new vscode.EventEmitter<string>();
  readonly onDidConnect = this.connected.event;
  readonly onDidDisconnect = this.disconnected.event;
  private lastError = '';

  constructor(readonly log: vscode.OutputChannel, private readonly version: string) {}

  /** The connected client, connecting first if needed. Rejects (after telling the user) on failure. */
  ensure(): Promise<ChatdClient> {
    if (this.client && !this.client.isClosed) return Promise.resolve(this.client);
    this.connecting ??= this.connect().finally(() => { this.connecting = undefined; });
    return this.connecting;
  }

  async restart(): Promise<ChatdClient> {
    this.client?.dispose();
    this.client = undefined;
    return this.ensure();
  }

  private transport(): Transport {
    const cfg = vscode.workspace.getConfiguration('chatd');
    const socket = cfg.get<string>('socket', '').trim();
    if (socket) return { kind: 'socket', path: socket };
    const found = findChatd(cfg.get<string>('path', ''));
    if (!found.command) {
      const configured = cfg.get<string>('path', '').trim();
      throw new ConnectError(configured
        ? `chatd: the \`chatd.path\` setting names ${configured}, which is not an executable file.`
        : 'chatd: the `chatd` command was not found on PATH or in ~/.local/bin. Install chatd (pip install chatd, '
          + 'or `scripts/chat` in a chatd checkout) or set `chatd.path` to its executable.', found.tried.join('\n'), true);
    }
    return { kind: 'stdio', command: found.command, args: ['stdio'], env: process.env };
  }

  private async connect(): Promise<ChatdClient> {
    let client: ChatdClient;
    try {
      const transport = this.transport();
      this.log.appendLine(`connecting: ${transport.kind === 'socket' ? transport.path : `${transport.command} stdio`}`);
      client = await ChatdClient.connect({
        transport,
        clientName: 'vscode',
        clientVersion: this.version,
        workspaceRoot: vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
        toolApproval: true,
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.log.appendLine(`connect failed: ${message}`);
      if (err instanceof ConnectError && err.detail) this.log.appendLine(err.detail);
      this.report(err instanceof ConnectError && err.notFound ? message : `chatd failed to start: ${message}`);
      throw err;
    }
    this.lastError = '';
    this.log.appendLine(`connected to chatd ${client.serverVersion}`);
    client.onClose((reason) => {
      this.log.appendLine(`disconnected: ${reason}`);
      if (client.stderr) this.log.appendLine(client.stderr.trim());
      if (this.client === client) {
        this.client = undefined;
        this.disconnected.fire(reason);
      }
    });
    client.onRequest('tool/approve', (params: { conversation: string; tool: string; arguments: unknown }) =>
      askApproval(params.conversation, params.tool, params.arguments));
    if (vscode.workspace.getConfiguration('chatd').get<boolean>('clientTools', true)) {
      await registerEditorTools(client).catch((e) => this.log.appendLine(`tools/register failed: ${e?.message ?? e}`));
    }
    await client.subscribe('*');
    this.client = client;
    this.connected.fire(client);
    return client;
  }

  /** One clear line with the ways out; the same failure is not repeated while it persists. */
  private report(message: string): void {
    if (message === this.lastError) return;
    this.lastError = message;
    void vscode.window.showErrorMessage(message, 'Open Settings', 'Show Log', 'Retry').then((choice) => {
      if (choice === 'Open Settings') void vscode.commands.executeCommand('workbench.action.openSettings', 'chatd.');
      else if (choice === 'Show Log') this.log.show();
      else if (choice === 'Retry') { this.lastError = ''; void this.ensure().catch(() => undefined); }
    });
  }

  dispose(): void {
    this.client?.dispose(); // ends our relay only: the daemon keeps running for other clients
    this.connected.dispose();
    this.disconnected.dispose();
  }
}

async function askApproval(conversation: string, tool: string, args: unknown): Promise<{ approved: boolean }> {
  let shown = JSON.stringify(args ?? {});
  if (shown.length > 300) shown = `${shown.slice(0, 300)}…`;
  const choice = await vscode.window.showWarningMessage(
    `chatd: allow the tool "${tool}" in conversation "${conversation}"? Arguments: ${shown}`, 'Allow', 'Deny');
  return { approved: choice === 'Allow' };
}
