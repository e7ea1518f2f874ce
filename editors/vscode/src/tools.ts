// Editor-side tools the daemon may call during a turn (`tools/register`, then `tool/invoke` requests):
// the current selection, the open editors, and VS Code's diagnostics. Read-only, so no approval needed.

import * as path from 'path';
import * as vscode from 'vscode';
import { ResponseError } from 'vscode-jsonrpc/node';
import type { ChatdClient, ToolDecl, ToolRequest } from './protocol';

const NO_PARAMS = { type: 'object', properties: {} };

export const EDITOR_TOOLS: ToolDecl[] = [
  {
    name: 'vscode_selection',
    description: "The text selected in the user's VS Code editor, with its file path, language and line range.",
    parameters: NO_PARAMS,
  },
  {
    name: 'vscode_open_editors',
    description: 'The files open in VS Code (path, language, unsaved changes), the active one first.',
    parameters: NO_PARAMS,
  },
  {
    name: 'vscode_diagnostics',
    description: 'Errors and warnings VS Code reports (compilers, linters), for one file or every file.',
    parameters: {
      type: 'object',
      properties: { path: { type: 'string', description: 'A file path, workspace-relative or absolute; omit for all files.' } },
    },
  },
];

export const EDITOR_TOOL_NAMES = EDITOR_TOOLS.map((t) => t.name);

export async function registerEditorTools(client: ChatdClient): Promise<void> {
  client.onRequest('tool/invoke', (req: ToolRequest) => runTool(req.tool, req.arguments ?? {}));
  await client.request('tools/register', { tools: EDITOR_TOOLS });
}

function rel(uri: vscode.Uri): string {
  return uri.scheme === 'file' ? vscode.workspace.asRelativePath(uri, false) : uri.toString();
}

const SEVERITY = ['error', 'warning', 'info', 'hint'];

export function runTool(name: string, args: Record<string, unknown>): unknown {
  switch (name) {
    case 'vscode_selection': {
      const editor = vscode.window.activeTextEditor;
      if (!editor) return { file: null, text: '', note: 'no editor is active' };
      const sel = editor.selection;
      return {
        file: rel(editor.document.uri),
        language: editor.document.languageId,
        startLine: sel.start.line + 1,
        endLine: sel.end.line + 1,
        text: editor.document.getText(sel),
      };
    }
    case 'vscode_open_editors': {
      const active = vscode.window.activeTextEditor?.document.uri.toString();
      const docs = vscode.workspace.textDocuments.filter((d) => d.uri.scheme === 'file' || d.uri.scheme === 'untitled');
      docs.sort((a, b) => Number(b.uri.toString() === active) - Number(a.uri.toString() === active));
      return docs.map((d) => ({ file: rel(d.uri), language: d.languageId, unsaved: d.isDirty, lines: d.lineCount }));
    }
    case 'vscode_diagnostics': {
      const wanted = typeof args.path === 'string' && args.path ? args.path : undefined;
      const out: unknown[] = [];
      for (const [uri, diags] of vscode.languages.getDiagnostics()) {
        const file = rel(uri);
        if (wanted && file !== wanted && uri.fsPath !== wanted && uri.fsPath !== path.resolve(wanted)) continue;
        for (const d of diags) {
          out.push({ file, line: d.range.start.line + 1, severity: SEVERITY[d.severity], message: d.message,
            source: d.source ?? null });
        }
      }
      return out.slice(0, 500);
    }
    default:
      throw new ResponseError(-32601, `no editor tool named ${name}`);
  }
}
