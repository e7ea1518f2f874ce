// The chat webview: shows what the extension host posts and posts back what the user does.
// Markup from the host is already sanitised (src/render.ts); it is still parsed inertly with DOMParser and
// copied through an allowlist of tags and attributes, so no host bug can put a script or handler here.
// @ts-check
(function () {
  // @ts-ignore acquireVsCodeApi is injected by VS Code
  const vscode = acquireVsCodeApi();
  const log = /** @type {HTMLElement} */ (document.getElementById('log'));
  const input = /** @type {HTMLTextAreaElement} */ (document.getElementById('input'));
  const form = /** @type {HTMLFormElement} */ (document.getElementById('composer'));
  const sendBtn = /** @type {HTMLButtonElement} */ (document.getElementById('send'));
  const stopBtn = /** @type {HTMLButtonElement} */ (document.getElementById('stop'));
  const modelBtn = /** @type {HTMLButtonElement} */ (document.getElementById('model'));
  const costEl = /** @type {HTMLElement} */ (document.getElementById('cost'));
  const titleEl = /** @type {HTMLElement} */ (document.getElementById('title'));

  const TAGS = new Set(['P', 'BR', 'HR', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'UL', 'OL', 'LI', 'BLOCKQUOTE', 'PRE',
    'CODE', 'SPAN', 'EM', 'STRONG', 'DEL', 'S', 'A', 'TABLE', 'THEAD', 'TBODY', 'TR', 'TH', 'TD', 'DIV', 'BUTTON',
    'DETAILS', 'SUMMARY']);
  const ATTRS = new Set(['class', 'href', 'title', 'start', 'data-action']);

  /** @param {Node} src @returns {Node | null} */
  function copySafe(src) {
    if (src.nodeType === Node.TEXT_NODE) return document.createTextNode(src.textContent || '');
    if (src.nodeType !== Node.ELEMENT_NODE) return null;
    const el = /** @type {Element} */ (src);
    if (!TAGS.has(el.tagName)) {
      // Unknown markup: keep its text, never the element.
      return document.createTextNode(el.textContent || '');
    }
    const out = document.createElement(el.tagName.toLowerCase());
    for (const attr of Array.from(el.attributes)) {
      if (!ATTRS.has(attr.name)) continue;
      if (attr.name === 'href' && !/^(https?:|mailto:)/i.test(attr.value)) continue;
      out.setAttribute(attr.name, attr.value);
    }
    if (out.tagName === 'BUTTON') out.setAttribute('type', 'button');
    for (const child of Array.from(el.childNodes)) {
      const c = copySafe(child);
      if (c) out.appendChild(c);
    }
    return out;
  }

  /** @param {HTMLElement} target @param {string} html */
  function setSafeHtml(target, html) {
    const doc = new DOMParser().parseFromString(`<body>${html}</body>`, 'text/html');
    const frag = document.createDocumentFragment();
    for (const child of Array.from(doc.body.childNodes)) {
      const c = copySafe(child);
      if (c) frag.appendChild(c);
    }
    target.replaceChildren(frag);
  }

  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  /** @param {() => void} fn */
  function keepScrolled(fn) {
    const stick = atBottom();
    fn();
    if (stick) log.scrollTop = log.scrollHeight;
  }

  /** @param {{key: string, role: string, html: string, meta?: string}} item */
  function itemElement(item) {
    const el = document.createElement('div');
    el.className = `msg ${item.role}`;
    el.dataset.key = item.key;
    const who = document.createElement('div');
    who.className = 'who';
    who.textContent = item.role === 'assistant' ? 'chatd' : item.role === 'user' ? 'you' : item.role;
    const body = document.createElement('div');
    body.className = 'body';
    setSafeHtml(body, item.html);
    el.append(who, body);
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.textContent = item.meta || '';
    el.appendChild(meta);
    return el;
  }

  /** @type {Map<string, HTMLElement>} live turns by turnId */
  const live = new Map();

  /** @param {string} turnId */
  function liveTurn(turnId) {
    let el = live.get(turnId);
    if (!el) {
      el = document.createElement('div');
      el.className = 'turn live';
      el.dataset.turn = turnId;
      log.appendChild(el);
      live.set(turnId, el);
    }
    return el;
  }

  /** @param {HTMLElement} turn @returns {HTMLElement} */
  function replyOf(turn) {
    let reply = /** @type {HTMLElement | null} */ (turn.querySelector(':scope > .msg.assistant'));
    if (!reply) {
      reply = itemElement({ key: 'live', role: 'assistant', html: '', meta: '' });
      reply.classList.add('streaming');
      turn.appendChild(reply);
    }
    return reply;
  }

  /** @param {string} kind @param {string} text */
  function noticeElement(kind, text) {
    const el = document.createElement('div');
    el.className = `notice ${kind}`;
    el.textContent = text;
    return el;
  }

  function setBusy(/** @type {boolean} */ busy) {
    stopBtn.hidden = !busy;
    document.body.classList.toggle('busy', busy);
  }

  window.addEventListener('message', (event) => {
    const msg = event.data;
    switch (msg.type) {
      case 'reset': {
        titleEl.textContent = msg.title;
        live.clear();
        const frag = document.createDocumentFragment();
        for (const item of msg.items) frag.appendChild(itemElement(item));
        log.replaceChildren(frag);
        log.scrollTop = log.scrollHeight;
        break;
      }
      case 'header':
        titleEl.textContent = msg.title;
        modelBtn.textContent = msg.model || 'model';
        costEl.textContent = msg.cost || '';
        break;
      case 'turnStarted': {
        // A new turn, from here or any other client, is what to look at: scroll to it.
        const turn = liveTurn(msg.turnId);
        if (msg.user && !turn.querySelector('.msg.user')) turn.prepend(itemElement(msg.user));
        const reply = replyOf(turn);
        reply.querySelector('.meta').textContent = `${msg.model} …`;
        log.scrollTop = log.scrollHeight;
        break;
      }
      case 'turnText':
        keepScrolled(() => {
          const reply = replyOf(liveTurn(msg.turnId));
          setSafeHtml(/** @type {HTMLElement} */ (reply.querySelector('.body')), msg.html);
        });
        break;
      case 'turnExtra': // tool calls and results of a live turn, in order
        keepScrolled(() => {
          const turn = liveTurn(msg.turnId);
          let extra = /** @type {HTMLElement | null} */ (turn.querySelector(':scope > .extra'));
          if (!extra) {
            extra = document.createElement('div');
            extra.className = 'extra';
            turn.insertBefore(extra, replyOf(turn));
          }
          setSafeHtml(extra, msg.html);
        });
        break;
      case 'notice':
        keepScrolled(() => {
          const el = noticeElement(msg.kind, msg.text);
          if (msg.turnId) liveTurn(msg.turnId).appendChild(el); else log.appendChild(el);
        });
        break;
      case 'committed': // the turn's messages as stored replace its live rendering
        keepScrolled(() => {
          const turn = live.get(msg.turnId);
          const frag = document.createDocumentFragment();
          for (const item of msg.items) frag.appendChild(itemElement(item));
          const notices = turn ? Array.from(turn.querySelectorAll(':scope > .notice')) : [];
          const done = document.createElement('div');
          done.className = 'turn';
          done.dataset.turn = msg.turnId;
          done.append(frag, ...notices.filter((n) => !n.classList.contains('transient')));
          if (turn) turn.replaceWith(done); else log.appendChild(done);
          live.delete(msg.turnId);
        });
        break;
      case 'meta': {
        const turn = log.querySelector(`.turn[data-turn="${CSS.escape(msg.turnId)}"]`);
        const metas = turn ? turn.querySelectorAll('.msg.assistant .meta') : [];
        if (metas.length) metas[metas.length - 1].textContent = msg.text;
        break;
      }
      case 'turnEnded': {
        const turn = live.get(msg.turnId);
        if (turn) {
          // Cancelled or failed: nothing was committed. Keep the prompt, drop the partial reply, say why.
          turn.classList.remove('live');
          turn.classList.add(msg.outcome);
          const reply = turn.querySelector(':scope > .msg.assistant');
          if (reply) reply.remove();
          turn.appendChild(noticeElement(msg.outcome === 'cancelled' ? 'warn' : 'error', msg.text));
          live.delete(msg.turnId);
        }
        break;
      }
      case 'busy':
        setBusy(msg.busy);
        break;
      case 'prefill':
        input.value = msg.text;
        input.focus();
        break;
    }
  });

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    vscode.postMessage({ type: 'send', text });
    input.value = '';
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  stopBtn.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));
  modelBtn.addEventListener('click', () => vscode.postMessage({ type: 'pickModel' }));

  log.addEventListener('click', (e) => {
    const target = /** @type {HTMLElement} */ (e.target);
    const action = target.closest('button[data-action]');
    if (action) {
      const code = action.closest('.code-block')?.querySelector('code')?.textContent ?? '';
      vscode.postMessage({ type: action.getAttribute('data-action'), code });
      action.textContent = action.getAttribute('data-action') === 'copy' ? 'Copied' : 'Inserted';
      return;
    }
    const link = target.closest('a[href]');
    if (link) {
      e.preventDefault();
      vscode.postMessage({ type: 'openLink', href: link.getAttribute('href') });
    }
  });

  vscode.postMessage({ type: 'ready' });
})();
