// Markdown to safe HTML for the chat view: the one place model text becomes markup. Raw HTML in model
// text is escaped (markdown-it with html: false), links are limited to http(s)/mailto, code blocks are
// highlighted and get copy / insert buttons. Pure: no VS Code, unit-tested under Node.

import MarkdownIt from 'markdown-it';
import hljs from 'highlight.js/lib/common';

const SAFE_LINK = /^(https?:|mailto:)/i;

const md: MarkdownIt = new MarkdownIt({ html: false, linkify: true, breaks: false, typographer: false });

md.validateLink = (url: string) => SAFE_LINK.test(url.trim());
md.disable(['image']); // no remote fetches from the webview; an image renders as its alt text link

md.renderer.rules.fence = (tokens, idx) => {
  const token = tokens[idx];
  const lang = (token.info || '').trim().split(/\s+/)[0].toLowerCase();
  return codeBlock(token.content, lang);
};
md.renderer.rules.code_block = (tokens, idx) => codeBlock(tokens[idx].content, '');

const defaultLinkOpen = md.renderer.rules.link_open
  ?? ((tokens, idx, options, _env, self) => self.renderToken(tokens, idx, options));
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet('title', tokens[idx].attrGet('href') ?? '');
  return defaultLinkOpen(tokens, idx, options, env, self);
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]!));
}

/** Highlighted HTML for code; unknown languages are escaped as they are (no guessing: it is slow and wrong). */
export function highlight(code: string, lang: string): string {
  if (lang && hljs.getLanguage(lang)) {
    try {
      return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
    } catch { /* fall through to plain */ }
  }
  return escapeHtml(code);
}

function codeBlock(code: string, lang: string): string {
  const label = lang ? escapeHtml(lang) : 'text';
  const langClass = lang && /^[\w+#-]+$/.test(lang) ? ` language-${lang}` : '';
  return `<div class="code-block"><div class="code-toolbar"><span class="code-lang">${label}</span>`
    + '<button class="code-action" data-action="copy" title="Copy to the clipboard">Copy</button>'
    + '<button class="code-action" data-action="insert" title="Insert at the cursor in the editor">Insert</button>'
    + `</div><pre><code class="hljs${langClass}">${highlight(code.replace(/\n$/, ''), lang)}</code></pre></div>`;
}

/** Markdown (model or user text) to HTML holding only markup markdown-it itself produces. */
export function renderMarkdown(text: string): string {
  return md.render(text);
}

export function formatCost(cost: number | undefined | null): string {
  if (cost === undefined || cost === null) return '';
  if (cost === 0) return '$0';
  if (cost < 0.01) return `$${cost.toFixed(4)}`;
  return `$${cost.toFixed(2)}`;
}

export function formatAge(unixSeconds: number, now = Date.now() / 1000): string {
  const s = Math.max(0, Math.round(now - unixSeconds));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 30) return `${Math.floor(s / 86400)} d ago`;
  return new Date(unixSeconds * 1000).toISOString().slice(0, 10);
}
