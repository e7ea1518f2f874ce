// The HTML builder: model text becomes safe markup, code blocks get highlighting and buttons.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { escapeHtml, formatAge, formatCost, renderMarkdown } from '../../src/render';
import { messageItems, pageHtml, replyMeta, toolCallHtml } from '../../src/chatHtml';
import type { Message } from '../../src/protocol';

test('a <script> in a reply renders as text', () => {
  const html = renderMarkdown('hi <script>alert(1)</script> there');
  assert.ok(!html.includes('<script'), html);
  assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'), html);
});

test('an <img onerror> renders as text, in a paragraph and as a block', () => {
  for (const text of ['see <img src=x onerror="alert(1)">', '<img src=x onerror=alert(1)>\n\nnext']) {
    const html = renderMarkdown(text);
    assert.ok(!/<img/i.test(html), html);
    assert.ok(html.includes('&lt;img src=x onerror='), html);
  }
});

test('javascript: and data: links are not links', () => {
  const html = renderMarkdown('[x](javascript:alert(1)) [y](data:text/html;base64,PHNjcmlwdD4=) [z](vbscript:msgbox)');
  assert.ok(!/href="(javascript|data|vbscript):/i.test(html), html);
  assert.ok(!/<a /.test(html), html);
});

test('http links stay links; markdown images are not fetched', () => {
  const html = renderMarkdown('[docs](https://example.com/a?b=1&c=2) ![pic](https://example.com/p.png)');
  assert.match(html, /<a href="https:\/\/example.com\/a\?b=1&amp;c=2" title="https:\/\/example.com\/a\?b=1&amp;c=2">docs<\/a>/);
  assert.ok(!/<img/.test(html), html);
});

test('fenced code is highlighted and gets copy and insert buttons', () => {
  const html = renderMarkdown('```python\ndef f(x):\n    return "<b>"\n```\n');
  assert.match(html, /<div class="code-block">/);
  assert.match(html, /data-action="copy"/);
  assert.match(html, /data-action="insert"/);
  assert.match(html, /<span class="code-lang">python<\/span>/);
  assert.match(html, /<span class="hljs-keyword">def<\/span>/);
  assert.ok(html.includes('&lt;b&gt;'), html);
  assert.ok(!html.includes('<b>'), html);
});

test('an unknown or hostile fence language is escaped, not trusted', () => {
  const html = renderMarkdown('```"><script>x</script>\n<i>code</i>\n```');
  assert.ok(!html.includes('<script'), html);
  assert.ok(!html.includes('<i>'), html);
  assert.ok(!html.includes('language-"'), html);
});

test('markdown basics render', () => {
  const html = renderMarkdown('# Title\n\n**bold** _it_ `code`\n\n- a\n- b\n\n| h |\n|---|\n| c |');
  for (const tag of ['<h1>', '<strong>bold</strong>', '<em>it</em>', '<code>code</code>', '<ul>', '<table>']) {
    assert.ok(html.includes(tag), `${tag} in ${html}`);
  }
});

test('escapeHtml and the small formatters', () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  assert.equal(formatCost(0), '$0');
  assert.equal(formatCost(0.00123), '$0.0012');
  assert.equal(formatCost(1.5), '$1.50');
  assert.equal(formatAge(1000, 1030), 'just now');
  assert.equal(formatAge(1000, 1000 + 7200), '2 h ago');
  assert.equal(replyMeta('gpt-x', { cost: 0.002, inputTokens: 3, outputTokens: 4 }), 'gpt-x · $0.0020 · 3 in / 4 out tokens');
});

test('transcript messages become items; tool calls and arguments are escaped', () => {
  const msgs: Message[] = [
    { seq: 1, role: 'user', text: 'q <b>', parts: [{ type: 'text', text: 'q <b>' }] },
    { seq: 2, role: 'assistant', text: '', model: 'echo', turnId: 't1',
      parts: [{ type: 'toolCall', id: 'c1', name: 'read<x>', arguments: { p: '<script>' } }] },
    { seq: 3, role: 'tool', text: '', parts: [{ type: 'toolResult', callId: 'c1', name: 'read', output: '<img onerror=1>', isError: true }] },
    { seq: 4, role: 'assistant', text: 'done', model: 'echo', turnId: 't1', parts: [{ type: 'text', text: 'done' }] },
  ];
  const items = messageItems(msgs, new Map([['t1', { cost: 0.5 }]]));
  assert.deepEqual(items.map((i) => i.role), ['user', 'assistant', 'tool', 'assistant']);
  assert.equal(items[3].meta, 'echo · $0.50');
  const all = items.map((i) => i.html).join('');
  assert.ok(!/<(script|img|b)[ >]/.test(all), all);
  assert.ok(all.includes('read&lt;x&gt;'), all);
  assert.ok(toolCallHtml('t', { a: 1 }).includes('&quot;a&quot;: 1'));
});

test('the page has a strict CSP with a nonce on its only script', () => {
  const html = pageHtml({ cspSource: 'vscode-resource:', scriptUri: 'vscode-resource:/chat.js', styleUri: 'vscode-resource:/chat.css', title: '<t>', nonce: 'abc123' });
  assert.match(html, /content="default-src 'none'; style-src vscode-resource: 'nonce-abc123'; script-src 'nonce-abc123';/);
  assert.equal((html.match(/<script /g) ?? []).length, 1);
  assert.match(html, /<script nonce="abc123" src="vscode-resource:\/chat.js">/);
  assert.ok(html.includes('<title>&lt;t&gt;</title>'));
  const other = pageHtml({ cspSource: 'x', scriptUri: 'a', styleUri: 'b', title: 't' });
  const n1 = /nonce-([\w]+)/.exec(other)![1];
  assert.ok(n1.length >= 20);
});
