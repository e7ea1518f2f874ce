// What the chat webview shows, as data: the page shell (CSP with a fresh nonce) and the rendered items for
// transcript messages. Pure: no VS Code, unit-tested under Node. The webview script (media/chat.js) puts
// items on screen through its own allowlist sanitiser, never through raw innerHTML.

import { randomBytes } from 'crypto';
import type { Message, Part } from './protocol';
import { escapeHtml, formatCost, renderMarkdown } from './render';

/** One block in the transcript: a user prompt, a reply, or a tool exchange. `html` is already safe. */
export interface Item {
  key: string;
  role: 'user' | 'assistant' | 'tool' | 'system' | 'notice';
  html: string;
  meta?: string;
}

/** What the host knows about a reply beyond the message itself (cost reaches us only with chat/send). */
export interface ReplyInfo { cost?: number; inputTokens?: number; outputTokens?: number; latencyMs?: number }

export function nonce(): string {
  return randomBytes(18).toString('base64').replace(/[+/=]/g, '');
}

export function replyMeta(model: string | null | undefined, info?: ReplyInfo): string {
  const bits: string[] = [];
  if (model) bits.push(model);
  if (info?.cost !== undefined) bits.push(formatCost(info.cost));
  if (info?.inputTokens !== undefined || info?.outputTokens !== undefined) {
    bits.push(`${info?.inputTokens ?? 0} in / ${info?.outputTokens ?? 0} out tokens`);
  }
  if (info?.latencyMs !== undefined) bits.push(`${(info.latencyMs / 1000).toFixed(1)} s`);
  return bits.join(' · ');
}

function json(value: unknown): string {
  try {
    const s = JSON.stringify(value, null, 2);
    return s.length > 4000 ? `${s.slice(0, 4000)}\n…` : s;
  } catch {
    return String(value);
  }
}

export function toolCallHtml(name: string, args: unknown, status = ''): string {
  return `<details class="tool-call"><summary>tool <code>${escapeHtml(name)}</code>${status ? ` <span class="tool-status">${escapeHtml(status)}</span>` : ''}</summary>`
    + `<pre><code>${escapeHtml(json(args ?? {}))}</code></pre></details>`;
}

export function toolResultHtml(name: string, output: unknown, isError: boolean): string {
  const text = typeof output === 'string' ? output : json(output);
  return `<details class="tool-result${isError ? ' error' : ''}"><summary>${isError ? 'tool error' : 'result'} of <code>${escapeHtml(name)}</code></summary>`
    + `<pre><code>${escapeHtml(text.length > 4000 ? `${text.slice(0, 4000)}\n…` : text)}</code></pre></details>`;
}

function partsHtml(parts: Part[], fallbackText: string): string {
  if (!parts.length) return renderMarkdown(fallbackText);
  let html = '';
  for (const part of parts) {
    switch (part.type) {
      case 'text': html += renderMarkdown(part.text); break;
      case 'thinking':
        if (part.text) html += `<details class="thinking"><summary>thinking</summary>${renderMarkdown(part.text)}</details>`;
        break;
      case 'toolCall': html += toolCallHtml(part.name, part.arguments); break;
      case 'toolResult': html += toolResultHtml(part.name, part.output, !!part.isError); break;
    }
  }
  return html;
}

/** Transcript messages to items; `replies` adds cost and tokens to replies this window sent. */
export function messageItems(messages: Message[], replies: Map<string, ReplyInfo> = new Map()): Item[] {
  const items: Item[] = [];
  for (const m of messages) {
    const key = `seq-${m.seq}`;
    if (m.role === 'system') {
      items.push({ key, role: 'system', html: renderMarkdown(m.text), meta: 'system prompt' });
    } else if (m.role === 'user') {
      items.push({ key, role: 'user', html: partsHtml(m.parts, m.text) });
    } else if (m.role === 'assistant') {
      items.push({ key, role: 'assistant', html: partsHtml(m.parts, m.text), meta: replyMeta(m.model, m.turnId ? replies.get(m.turnId) : undefined) });
    } else {
      items.push({ key, role: 'tool', html: partsHtml(m.parts, m.text) });
    }
  }
  return items;
}

export interface PageOptions {
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  title: string;
  nonce?: string;
}

/** The webview page: nothing loads but our own script and stylesheet (CSP default-src 'none'). */
export function pageHtml(o: PageOptions): string {
  const n = o.nonce ?? nonce();
  const csp = [
    "default-src 'none'",
    `style-src ${o.cspSource} 'nonce-${n}'`,
    `script-src 'nonce-${n}'`,
    `font-src ${o.cspSource}`,
    `img-src ${o.cspSource}`,
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${escapeHtml(o.styleUri)}" nonce="${n}">
<title>${escapeHtml(o.title)}</title>
</head>
<body>
<header id="header"><span id="title">${escapeHtml(o.title)}</span><button id="model" class="link" title="Pick the model">model</button><span id="cost"></span></header>
<main id="log" aria-live="polite"></main>
<form id="composer">
<textarea id="input" rows="3" placeholder="Ask anything (Enter to send, Shift+Enter for a new line)"></textarea>
<div id="buttons"><button id="send" type="submit">Send</button><button id="stop" type="button" hidden>Stop</button></div>
</form>
<script nonce="${n}" src="${escapeHtml(o.scriptUri)}"></script>
</body>
</html>`;
}
