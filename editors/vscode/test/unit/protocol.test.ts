// The protocol client against a real daemon: over the socket and over a spawned `chatd stdio`.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChatdClient, ConnectError, ErrorCodes, isCancelled, TurnStarted } from '../../src/protocol';
import { findChatd } from '../../src/discovery';
import { CHATD, Daemon, startDaemon } from './daemon';
import { ResponseError } from 'vscode-jsonrpc/node';

let daemon: Daemon;
before(async () => { daemon = await startDaemon(); });
after(async () => { await daemon.stop(); });

function untilNotified<T>(client: ChatdClient, method: Parameters<ChatdClient['on']>[0], pred: (p: any) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const sub = client.on(method, (p) => { if (pred(p)) { sub.dispose(); resolve(p as T); } });
  });
}

for (const kind of ['socket', 'stdio'] as const) {
  describe(`over ${kind}`, () => {
    let client: ChatdClient;
    before(async () => {
      client = await ChatdClient.connect({
        transport: kind === 'socket' ? { kind, path: daemon.socket } : { kind, command: CHATD, args: ['stdio'], env: daemon.env },
        clientName: 'unit', toolApproval: true,
      });
    });
    after(() => client.dispose());

    test('initialize reports the server; send streams deltas and returns the reply', async () => {
      assert.ok(client.serverVersion);
      const name = `c-${kind}`;
      const deltas: string[] = [];
      const events: string[] = [];
      client.on('chat/delta', (d) => { if (d.conversation === name) deltas.push(d.text); });
      client.on('chat/turnStarted', (d) => { if (d.conversation === name) events.push('started'); });
      client.on('conversation/changed', (d) => { if (d.name === name) events.push(`changed:${d.kind}`); });
      client.on('chat/turnEnded', (d) => { if (d.conversation === name) events.push(`ended:${d.outcome}`); });
      const r = await client.send({ conversation: name, text: 'hello there' });
      assert.equal(r.modelUsed, 'echo');
      assert.match(r.message.text, /You said: hello there$/);
      assert.equal(deltas.join(''), r.message.text);
      assert.equal(r.cost, 0);
      assert.deepEqual(events, ['started', 'changed:turn', 'ended:committed']); // `created` goes to "*" subscribers only
      const list = await client.listConversations();
      assert.ok(list.some((c) => c.name === name && c.messageCount === 2 && c.lastModel === 'echo'));
      const models = await client.listModels();
      assert.ok(models.some((m) => m.name === 'echo'));
    });

    test('subscribe returns the transcript, and a turn in flight with its text so far', async () => {
      const name = `slow-${kind}`;
      await client.request('conversation/create', { name, params: { echoDelayMs: 40 } });
      const other = await ChatdClient.connect({ transport: { kind: 'socket', path: daemon.socket } });
      try {
        const firstDelta = untilNotified(other, 'chat/delta', (d) => d.conversation === name);
        await other.subscribe(name);
        const sending = client.send({ conversation: name, text: 'one two three four five' });
        await firstDelta;
        const state = await other.request<any>('conversation/get', { name });
        assert.equal(state.activeTurn.user.text, 'one two three four five');
        const cancelled = await client.cancel(name);
        assert.equal(cancelled.cancelled, true);
        await assert.rejects(sending, (err) => isCancelled(err));
        const after = await client.subscribe(name);
        assert.equal(after.messages.length, 0); // a cancelled turn commits nothing
        assert.equal(after.activeTurn ?? null, null);
      } finally {
        other.dispose();
      }
    });

    test('a turn from another client reaches a "*" subscriber, without deltas', async () => {
      await client.subscribe('*');
      const name = `wild-${kind}`;
      const seen: string[] = [];
      const sub = client.on('chat/delta', (d) => { if (d.conversation === name) seen.push('delta'); });
      const created = untilNotified(client, 'conversation/changed', (c) => c.name === name && c.kind === 'created');
      const turned = untilNotified(client, 'chat/turnStarted', (t: TurnStarted) => t.conversation === name);
      const ended = untilNotified(client, 'chat/turnEnded', (t) => t.conversation === name);
      const other = await ChatdClient.connect({ transport: { kind: 'socket', path: daemon.socket } });
      try {
        await other.send({ conversation: name, text: 'from elsewhere' });
      } finally {
        other.dispose();
      }
      await Promise.all([created, turned, ended]);
      assert.deepEqual(seen, []);
      sub.dispose();
      await client.unsubscribe('*');
    });

    test('errors keep their codes', async () => {
      await assert.rejects(client.request('conversation/get', { name: 'nope' }),
        (err) => err instanceof ResponseError && err.code === ErrorCodes.ConversationNotFound);
      await assert.rejects(client.request('conversation/create', { name: `c-${kind}` }),
        (err) => err instanceof ResponseError && err.code === ErrorCodes.ConversationExists);
    });

    test('the daemon calls a registered client tool with tool/invoke', async () => {
      // No offline model calls tools, so check the registration round trip and the handler wiring.
      client.onRequest('tool/invoke', () => ({ ok: true }));
      const r = await client.request<any>('tools/register', { tools: [{ name: `t_${kind}`, description: 'test', parameters: { type: 'object', properties: {} } }] });
      assert.deepEqual(r.registered, [`t_${kind}`]);
      const tools = await client.request<any>('tools/list');
      assert.ok(tools.tools.some((t: any) => t.name === `t_${kind}` && t.origin === 'client'));
    });
  });
}

test('a missing chatd is a ConnectError that says so', async () => {
  await assert.rejects(ChatdClient.connect({ transport: { kind: 'stdio', command: '/nonexistent/chatd' } }),
    (err) => err instanceof ConnectError && err.notFound && /not found/.test(err.message));
  await assert.rejects(ChatdClient.connect({ transport: { kind: 'socket', path: '/nonexistent/chatd.sock' } }),
    (err) => err instanceof ConnectError && /cannot connect/.test(err.message));
});

test('a chatd that exits at once is a ConnectError with its stderr', async () => {
  await assert.rejects(ChatdClient.connect({ transport: { kind: 'stdio', command: CHATD, args: ['no-such-subcommand'] } }),
    (err) => err instanceof ConnectError && /did not start/.test(err.message) && /invalid choice/.test(err.message));
});

test('discovery: a configured path wins and is checked; PATH is searched', () => {
  assert.deepEqual(findChatd('/nonexistent/chatd').command, undefined);
  assert.equal(findChatd(CHATD).command, CHATD);
  const dir = require('path').dirname(CHATD);
  assert.equal(findChatd('', { PATH: `/nonexistent:${dir}` }).command, CHATD);
  assert.ok(findChatd('', { PATH: '/nonexistent' }).tried.includes('/nonexistent/chatd'));
});
