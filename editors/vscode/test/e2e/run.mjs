// End to end in real VS Code: code-server with the packaged extension, driven by playwright-core in Debian's
// Chromium, against a real `chatd serve` on a private CHATD_HOME. Every wait is on a selector or condition.
//
// Needs scripts/install-test-deps.sh to have run and out/chatd.vsix to be built (`npm run package`).
// Env: CHATD_BIN (default ../../.venv/bin/chatd), CHATD_E2E_SCREENSHOT (where the chat screenshot goes),
// CHATD_E2E_ARTIFACTS (failure screenshots and logs; default test-results/).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EXT = path.resolve(HERE, '..', '..');
const REPO = path.resolve(EXT, '..', '..');
const CACHE = process.env.CHATD_TEST_CACHE ?? path.join(os.homedir(), '.cache', 'chatd-test');
const env0 = Object.fromEntries(fs.readFileSync(path.join(CACHE, 'env.sh'), 'utf8').split('\n')
  .map((l) => /^export (\w+)="(.*)"$/.exec(l)).filter(Boolean).map((m) => [m[1], m[2]]));
const NODE24 = env0.CHATD_TEST_NODE24;
const CODE_SERVER = env0.CHATD_TEST_CODE_SERVER;
const CHROMIUM = env0.CHATD_TEST_CHROMIUM;
const CHATD = process.env.CHATD_BIN ?? path.join(REPO, '.venv', 'bin', 'chatd');
const VSIX = path.join(EXT, 'out', 'chatd.vsix');
const SCREENSHOT = process.env.CHATD_E2E_SCREENSHOT ?? path.join(REPO, 'docs', 'img', 'vscode-chat.png');
const ARTIFACTS = process.env.CHATD_E2E_ARTIFACTS ?? path.join(EXT, 'test-results');
const T0 = Date.now();
const log = (msg) => console.log(`[e2e ${((Date.now() - T0) / 1000).toFixed(1)}s] ${msg}`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-vscode-e2e-'));
const home = path.join(tmp, 'chatd-home');
const chatdEnv = Object.fromEntries(Object.entries(process.env)
  .filter(([k]) => !k.startsWith('CHATD_') && !k.endsWith('_API_KEY') && !k.endsWith('_BASE_URL')));
chatdEnv.CHATD_HOME = home;

const cleanups = [];
const children = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
    srv.on('error', reject);
  });
}

/** `chatd call` from a terminal: the "other client" of these tests. */
function chatdCall(method, params) {
  const r = spawnSync(CHATD, ['call', '--no-start', method, JSON.stringify(params)], { env: chatdEnv, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`chatd call ${method} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function chatdCallAsync(method, params) {
  const child = spawn(CHATD, ['call', '--no-start', method, JSON.stringify(params)], { env: chatdEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(err)))));
}

async function startDaemon() {
  const proc = spawn(CHATD, ['serve', '--ready-fd', '3'], { env: chatdEnv, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  await new Promise((resolve, reject) => {
    proc.stdio[3].once('data', (d) => (String(d).startsWith('ready') ? resolve() : reject(new Error(String(d)))));
    proc.once('exit', (code) => reject(new Error(`chatd serve exited (${code}): ${stderr}`)));
  });
  cleanups.push(async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  });
}

function codeServerEnv() {
  const e = { ...chatdEnv, PATH: `${path.dirname(NODE24)}:${process.env.PATH}` };
  for (const [k, d] of [['XDG_CONFIG_HOME', 'xdg-config'], ['XDG_DATA_HOME', 'xdg-data'], ['XDG_CACHE_HOME', 'xdg-cache'],
    ['XDG_STATE_HOME', 'xdg-state'], ['XDG_RUNTIME_DIR', 'xdg-runtime'], ['TMPDIR', 'tmp']]) {
    e[k] = path.join(tmp, d);
    fs.mkdirSync(e[k], { recursive: true, mode: 0o700 });
  }
  return e;
}

function installExtension(dirs, e) {
  const r = spawnSync(NODE24, [CODE_SERVER, '--user-data-dir', dirs.userData, '--extensions-dir', dirs.extensions,
    '--install-extension', VSIX, '--force'], { env: e, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`installing the extension failed: ${r.stdout}\n${r.stderr}`);
}

async function startCodeServer(port) {
  const dirs = { userData: path.join(tmp, 'user-data'), extensions: path.join(tmp, 'extensions'), config: path.join(tmp, 'config.yaml'),
    workspace: path.join(tmp, 'workspace') };
  fs.mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  fs.mkdirSync(path.join(dirs.userData, 'Machine'), { recursive: true });
  fs.mkdirSync(dirs.workspace, { recursive: true });
  fs.writeFileSync(path.join(dirs.workspace, 'sample.py'), 'def add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n');
  fs.writeFileSync(dirs.config, 'auth: none\ncert: false\n');
  // chatd.path is machine-overridable: the remote (Machine) settings are where code-server's extension host reads it.
  fs.writeFileSync(path.join(dirs.userData, 'Machine', 'settings.json'), JSON.stringify({ 'chatd.path': CHATD }));
  fs.writeFileSync(path.join(dirs.userData, 'User', 'settings.json'), JSON.stringify({
    'chatd.path': CHATD,
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'workbench.enableExperiments': false,
    'workbench.secondarySideBar.defaultVisibility': 'hidden',
    'chat.disableAIFeatures': true,
    'chat.commandCenter.enabled': false,
    'security.workspace.trust.enabled': false,
    'telemetry.telemetryLevel': 'off',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'update.mode': 'none',
    'window.commandCenter': false,
    'editor.minimap.enabled': false,
  }, null, 2));
  const e = codeServerEnv();
  installExtension(dirs, e);
  const logFile = fs.openSync(path.join(tmp, 'code-server.log'), 'w');
  // detached: a new session and process group (setsid), so every extension host and helper dies with it.
  const proc = spawn(NODE24, [CODE_SERVER, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry',
    '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', '--config', dirs.config,
    '--user-data-dir', dirs.userData, '--extensions-dir', dirs.extensions, dirs.workspace],
  { env: e, detached: true, stdio: ['ignore', logFile, logFile] });
  children.push(proc);
  cleanups.push(async () => {
    try { process.kill(-proc.pid, 'SIGKILL'); } catch { /* already gone */ }
  });
  // Ready when /healthz answers (a condition, polled).
  const deadline = Date.now() + 60000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`code-server exited: ${fs.readFileSync(path.join(tmp, 'code-server.log'), 'utf8')}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error('code-server did not answer /healthz in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  return dirs;
}

// ------------------------------------------------------------------ workbench helpers
async function runCommand(page, title, { attempts = 30 } = {}) {
  const input = page.locator('.quick-input-widget input.input');
  for (let i = 0; i < attempts; i++) {
    await page.keyboard.press('F1');
    if (!(await input.waitFor({ state: 'visible', timeout: 2000 }).then(() => true, () => false))) {
      // Focus was inside a webview that kept F1: give the workbench focus back and try again.
      await page.locator('.part.titlebar').click();
      continue;
    }
    await input.fill(`>${title}`);
    const row = page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first();
    try {
      await row.waitFor({ state: 'visible', timeout: 1500 });
      await row.click();
      return;
    } catch {
      // Commands of a just-activated extension appear 10-18 s after load, and an open palette does not
      // refresh: close it and look again.
      await page.keyboard.press('Escape');
      await input.waitFor({ state: 'hidden' });
    }
  }
  throw new Error(`command "${title}" never appeared in the palette`);
}

async function answerInput(page, value) {
  const input = page.locator('.quick-input-widget input.input');
  await input.waitFor({ state: 'visible' });
  await input.fill(value);
  await input.press('Enter');
  await input.waitFor({ state: 'hidden' });
}

/** The chat webview's document: VS Code nests it two iframes deep. */
function chatFrame(page) {
  return page.frameLocator('iframe.webview.ready').frameLocator('#active-frame');
}

async function waitFor(what, predicate, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ------------------------------------------------------------------ the tests
const results = [];
async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - t });
    log(`ok   ${name} (${((Date.now() - t) / 1000).toFixed(1)}s)`);
  } catch (err) {
    results.push({ name, ok: false, ms: Date.now() - t, err });
    log(`FAIL ${name}: ${err.stack ?? err}`);
    throw err;
  }
}

async function main() {
  for (const [what, p] of [['Node 24', NODE24], ['code-server', CODE_SERVER], ['chromium', CHROMIUM], ['chatd', CHATD], ['the .vsix', VSIX]]) {
    if (!p || !fs.existsSync(p)) throw new Error(`${what} not found at ${p}: run scripts/install-test-deps.sh and npm run package`);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await startDaemon();
  log('daemon ready');
  const port = await freePort();
  const dirs = await startCodeServer(port);
  log(`code-server on ${port}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  try {
    await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(dirs.workspace)}`);
    await page.locator('.monaco-workbench').waitFor();
    log('workbench loaded');
    await run(page, dirs);
  } catch (err) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png') }).catch(() => undefined);
    fs.copyFileSync(path.join(tmp, 'code-server.log'), path.join(ARTIFACTS, 'code-server.log'));
    const extLogs = spawnSync('sh', ['-c', `find ${dirs.userData}/logs -name '*chatd*' -exec cat {} +`], { encoding: 'utf8' }).stdout;
    fs.writeFileSync(path.join(ARTIFACTS, 'extension-output.log'), extLogs ?? '');
    throw err;
  }
}

async function run(page, dirs) {
  const frame = chatFrame(page);
  const name = 'e2e chat';

  await step('the conversations view lists a conversation created by another client', async () => {
    chatdCall('conversation/create', { name: 'made in a terminal' });
    await page.locator('.activitybar .action-item a[aria-label^="chatd"], .activitybar .action-item [aria-label^="chatd"]').first().click();
    await page.locator('.monaco-list-row', { hasText: 'made in a terminal' }).waitFor();
  });

  await step('New Chat opens the chat view for a new conversation', async () => {
    await runCommand(page, 'chatd: New Chat');
    await answerInput(page, name);
    await frame.locator('#input').waitFor();
    await frame.locator('#title', { hasText: name }).waitFor();
    await page.locator('.monaco-list-row', { hasText: name }).waitFor(); // the tree follows, too
  });

  await step('a prompt sent from the view streams its reply in, rendered, with the model', async () => {
    chatdCall('conversation/update', { name, params: { echoDelayMs: 60 } });
    await frame.locator('#input').fill('hello from **VS Code**');
    await frame.locator('#input').press('Enter');
    await frame.locator('.msg.user .body strong', { hasText: 'VS Code' }).waitFor();
    // Mid-stream: a reply with some text but not all of it, marked as streaming, and the stop button.
    const streaming = frame.locator('.msg.assistant.streaming .body');
    await waitFor('a partial reply', async () => ((await streaming.textContent().catch(() => '')) ?? '').includes('echo'));
    await frame.locator('#stop').waitFor({ state: 'visible' });
    const reply = frame.locator('.turn:not(.live) .msg.assistant').last();
    await reply.locator('.body', { hasText: 'You said: hello from VS Code' }).waitFor();
    await reply.locator('.meta', { hasText: /^echo · \$0 · \d+ in \/ \d+ out tokens/ }).waitFor();
    await frame.locator('#stop').waitFor({ state: 'hidden' });
    // What the view shows is what the daemon stored.
    const stored = chatdCall('conversation/get', { name });
    if (stored.messages.length !== 2) throw new Error(`stored ${stored.messages.length} messages`);
  });

  await step('Stop cancels the reply; nothing of the turn is saved', async () => {
    chatdCall('conversation/update', { name, params: { echoDelayMs: 400 } });
    await frame.locator('#input').fill('a long answer please');
    await frame.locator('#input').press('Enter');
    await waitFor('a partial reply', async () => ((await frame.locator('.msg.assistant.streaming .body').textContent().catch(() => '')) ?? '').length > 0);
    await frame.locator('#stop').click();
    await frame.locator('.turn.cancelled .notice.warn', { hasText: 'Stopped' }).waitFor();
    await frame.locator('#stop').waitFor({ state: 'hidden' });
    const stored = chatdCall('conversation/get', { name });
    if (stored.messages.length !== 2 || stored.activeTurn) throw new Error(`after cancel: ${JSON.stringify(stored)}`);
  });

  await step('a turn sent from a terminal client appears live in the open view', async () => {
    chatdCall('conversation/update', { name, params: { echoDelayMs: 80 } });
    const sending = chatdCallAsync('chat/send', { conversation: name, text: 'sent from the terminal' });
    await frame.locator('.turn.live .msg.user', { hasText: 'sent from the terminal' }).waitFor();
    await waitFor('the terminal turn streaming', async () =>
      ((await frame.locator('.turn.live .msg.assistant.streaming .body').textContent().catch(() => '')) ?? '').includes('echo'));
    const result = await sending;
    await frame.locator('.turn:not(.live) .msg.assistant .body', { hasText: 'You said: sent from the terminal' }).waitFor();
    if (!result.message.text.endsWith('sent from the terminal')) throw new Error('unexpected reply');
  });

  await step('code blocks are highlighted and model HTML is inert', async () => {
    chatdCall('conversation/update', { name, params: { echoDelayMs: 0 } });
    const prompt = 'Here is code:\n\n```python\ndef greet(name):\n    return f"hello {name}"\n```\n\nand <img src=x onerror="document.title=\'pwned\'"> <script>document.title="pwned"</script>';
    await frame.locator('#input').fill(prompt);
    await frame.locator('#send').click();
    const block = frame.locator('.turn:not(.live) .msg.assistant .code-block').last();
    await block.locator('.hljs-keyword', { hasText: 'def' }).waitFor();
    await block.locator('.code-lang', { hasText: 'python' }).waitFor();
    const body = frame.locator('.turn:not(.live) .msg.assistant .body').last();
    await body.getByText('<img src=x onerror=', { exact: false }).waitFor();
    if (await frame.locator('#log img, #log script').count()) throw new Error('model HTML became elements');
  });

  await step('screenshot of the chat view', async () => {
    // A transcript worth looking at: one more reply with markdown, from the terminal.
    chatdCall('chat/send', { conversation: name, text: 'Render a list:\n\n- **bold** item\n- `inline code`\n\n```ts\nconst x: number = 42;\n```' });
    await frame.locator('.turn:not(.live) .msg.assistant .code-lang', { hasText: 'ts' }).waitFor();
    await page.keyboard.press('Escape');
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT });
    log(`screenshot: ${SCREENSHOT}`);
  });

  await step('Insert puts a code block at the cursor of the editor the user came from', async () => {
    const block = frame.locator('.turn:not(.live) .msg.assistant .code-block', { hasText: 'def greet' }).last();
    await runCommand(page, 'Go to File');
    const quickOpen = page.locator('.quick-input-widget input.input');
    await quickOpen.fill('sample.py');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'sample.py' }).first().waitFor();
    await quickOpen.press('Control+Enter'); // to the side: the chat stays visible
    await page.locator('.monaco-editor .view-line', { hasText: 'def add' }).first().waitFor();
    await page.keyboard.press('Control+End');
    await block.locator('button[data-action="insert"]').click();
    await page.locator('.monaco-editor .view-line', { hasText: 'def greet(name):' }).first().waitFor();
  });

  await step('Pick Model lists the daemon models; the status bar shows model and cost', async () => {
    // Focus the chat again so it is the current conversation.
    await page.locator('.tab', { hasText: name }).click();
    await page.locator('.statusbar-item', { hasText: /echo · \$0/ }).first().waitFor();
    await runCommand(page, 'chatd: Pick Model');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'echo' }).first().waitFor();
    // The keyboard, not the input's locator: once closed (a focus change can close a quick pick) the input
    // is inert, and a locator press would wait 30 s for it to become actionable.
    await page.keyboard.press('Escape');
    await page.locator('.quick-input-widget').waitFor({ state: 'hidden' });
  });

  await step('rename from another client retitles the open view and the tree', async () => {
    chatdCall('conversation/update', { name, newName: 'e2e renamed' });
    await frame.locator('#title', { hasText: 'e2e renamed' }).waitFor();
    await page.locator('.monaco-list-row', { hasText: 'e2e renamed' }).waitFor();
    await page.locator('.monaco-list-row', { hasText: 'made in a terminal' }).waitFor();
  });

  await step('a wrong chatd.path gives one actionable message', async () => {
    for (const scope of ['Machine', 'User']) {
      const file = path.join(dirs.userData, scope, 'settings.json');
      const settings = JSON.parse(fs.readFileSync(file, 'utf8'));
      fs.writeFileSync(file, JSON.stringify({ ...settings, 'chatd.path': '/nonexistent/chatd' }));
    }
    const toast = page.locator('.notification-toast', { hasText: 'which is not an executable file' });
    await waitFor('the error after Reconnect', async () => {
      await runCommand(page, 'chatd: Reconnect to the Daemon');
      return toast.waitFor({ timeout: 3000 }).then(() => true, () => false); // settings reload is asynchronous
    }, 30000);
    await toast.locator('a.monaco-button, .monaco-button', { hasText: 'Open Settings' }).first().waitFor();
    await page.locator('.statusbar-item', { hasText: 'chatd' }).first().waitFor();
  });
}

async function cleanUp() {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  for (const c of children) if (c.exitCode === null) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
}
// code-server runs in its own process group, out of reach of whoever kills us: stop it on every way out.
const LIMIT_MS = Number(process.env.CHATD_E2E_LIMIT_MS ?? 8 * 60 * 1000);
setTimeout(async () => { log(`FAIL: over the ${LIMIT_MS / 1000} s limit`); await cleanUp(); process.exit(1); }, LIMIT_MS).unref();
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, async () => { await cleanUp(); process.exit(1); });

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  if (!results.some((r) => !r.ok)) log(`FAIL setup: ${err.stack ?? err}`);
} finally {
  await cleanUp();
  if (!failed) fs.rmSync(tmp, { recursive: true, force: true });
  else log(`kept ${tmp} for inspection; artifacts in ${ARTIFACTS}`);
  log(`${results.filter((r) => r.ok).length}/${results.length} steps passed`);
}
process.exit(failed ? 1 : 0);
