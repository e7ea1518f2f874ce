// The Conversations view: every conversation the daemon holds, most recently active first, refreshed
// whenever the daemon announces a change (the session follows `*`, so changes made elsewhere show too).

import * as vscode from 'vscode';
import type { ChatdClient, ConversationInfo } from './protocol';
import { formatAge } from './render';
import type { Session } from './session';

export class ConversationItem extends vscode.TreeItem {
  constructor(readonly info: ConversationInfo) {
    super(info.name, vscode.TreeItemCollapsibleState.None);
    this.id = `conversation:${info.name}`;
    const model = info.lastModel ?? (info.preferModel !== 'last' && info.preferModel !== 'weighted' ? info.preferModel : info.models[0]) ?? '';
    this.description = [model, formatAge(info.updatedAt)].filter(Boolean).join(' · ');
    const tip = new vscode.MarkdownString();
    tip.appendText(info.name);
    tip.appendMarkdown(`\n\n${info.messageCount} messages · model ${model || 'default'}`);
    tip.appendMarkdown(`\n\nlast activity ${new Date(info.updatedAt * 1000).toLocaleString()}`);
    this.tooltip = tip;
    this.contextValue = 'chatd.conversation';
    this.iconPath = new vscode.ThemeIcon('comment-discussion');
    this.command = { command: 'chatd.openChat', title: 'Open Chat', arguments: [info.name] };
  }
}

export class ConversationsTree implements vscode.TreeDataProvider<ConversationItem>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeTreeData = this.changed.event;
  private pending: NodeJS.Timeout | undefined;
  private readonly subs: vscode.Disposable[] = [];

  constructor(private readonly session: Session) {
    this.subs.push(session.onDidConnect((client) => this.follow(client)));
    this.subs.push(session.onDidDisconnect(() => this.refresh()));
  }

  private follow(client: ChatdClient): void {
    client.on('conversation/changed', () => this.refreshSoon());
    this.refresh();
  }

  refresh(): void { this.changed.fire(); }

  /** Changes come in bursts (a turn: changed, then ended): one reload for the burst. */
  private refreshSoon(): void {
    if (this.pending) return;
    this.pending = setTimeout(() => { this.pending = undefined; this.refresh(); }, 50);
  }

  getTreeItem(item: ConversationItem): vscode.TreeItem { return item; }

  async getChildren(parent?: ConversationItem): Promise<ConversationItem[]> {
    if (parent) return [];
    const client = this.session.client;
    if (!client || client.isClosed) return [];
    try {
      return (await client.listConversations()).map((c) => new ConversationItem(c));
    } catch (err) {
      this.session.log.appendLine(`conversation/list failed: ${err instanceof Error ? err.message : err}`);
      return [];
    }
  }

  dispose(): void {
    clearTimeout(this.pending);
    this.subs.forEach((s) => s.dispose());
    this.changed.dispose();
  }
}
