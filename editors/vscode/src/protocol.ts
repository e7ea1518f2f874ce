// The chatd wire client: JSON-RPC 2.0 with Content-Length framing over a spawned `chatd stdio` or the
// daemon's Unix socket. Owns the connection, typed requests and the daemon's notifications; knows nothing
// of VS Code, so it is unit-tested against a real daemon under plain Node. docs/protocol.md is the contract.

import * as cp from 'child_process';
import * as net from 'net';
import {
  createMessageConnection, MessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter,
} from 'vscode-jsonrpc/node';

// ------------------------------------------------------------------ wire types (docs/protocol.md "Types")
export type Part =
  | { type: 'text'; text: string }
  | { type: 'toolCall'; id: string; name: string; arguments?: Record<string, unknown> }
  | { type: 'toolResult'; callId: string; name: string; output?: unknown; isError?: boolean }
  | { type: 'thinking'; text?: string; signature?: string | null; provider?: string | null };

export interface Message {
  seq: number;
  role: 'system' | 'user' | 'assistant' | 'tool';
  text: string;
  parts: Part[];
  model?: string | null;
  turnId?: string | null;
  createdAt?: number;
}

export interface ConversationInfo {
  name: string;
  system: string | null;
  models: string[];
  modelWeights: number[] | null;
  preferModel: string;
  params: Record<string, unknown>;
  lastModel: string | null;
  messageCount: number;
  lastSeq: number;
  createdAt: number;
  updatedAt: number;
}

export interface ActiveTurn { turnId: string; user: Message; model: string; text: string }
export interface ConversationState { conversation: ConversationInfo; messages: Message[]; activeTurn?: ActiveTurn | null }
export interface Usage { inputTokens: number; outputTokens: number; cachedTokens: number; reasoningTokens: number }
export interface Attempt { model: string; outcome: string; error?: string | null; latencyMs: number }

export interface SendResult {
  conversation: string;
  turnId: string;
  message: Message;
  modelUsed: string;
  usage: Usage;
  cost: number;
  finishReason: string;
  attempts: Attempt[];
  latencyMs: number;
}

export interface ModelInfo {
  name: string;
  provider: string;
  apiModel: string;
  contextWindow: number;
  maxOutput: number;
  inputPrice: number;
  outputPrice: number;
  capabilities: string[];
  keyPresent: boolean;
  cooldownUntil?: number | null;
}

export interface SendParams {
  conversation: string;
  text?: string;
  parts?: Part[];
  preferModel?: string;
  models?: string[];
  tools?: string[];
  params?: Record<string, unknown>;
  workspace?: string;
}

// ------------------------------------------------------------------ notifications (daemon to client)
export interface TurnStarted { conversation: string; turnId: string; user: Message; model: string }
export interface ChatDelta { conversation: string; turnId: string; text: string }
export interface ChatAttempt {
  conversation: string; turnId: string; model: string; outcome: string; reason?: string | null;
  next: 'retry' | 'fallback' | 'give up'; delayS: number; kind?: string | null; status?: number | null;
}
export interface TurnEnded { conversation: string; turnId: string; outcome: 'committed' | 'cancelled' | 'failed'; error?: string | null }
export interface ToolCallNote { conversation: string; turnId: string; callId: string; tool: string; arguments: Record<string, unknown> }
export interface ToolResultNote {
  conversation: string; turnId: string; callId: string; tool: string; output: unknown; isError: boolean; decision?: string;
}
export interface ConversationChanged {
  name: string;
  kind: 'turn' | 'created' | 'updated' | 'renamed' | 'deleted' | 'cleared';
  seq: number;
  messages: Message[];
  oldName?: string | null;
}
export interface ToolRequest { conversation: string; turnId: string; callId: string; tool: string; arguments: Record<string, unknown> }
export interface ToolDecl { name: string; description: string; parameters: Record<string, unknown>; sideEffects?: boolean; timeoutS?: number }

export interface Notifications {
  'chat/turnStarted': TurnStarted;
  'chat/delta': ChatDelta;
  'chat/attempt': ChatAttempt;
  'chat/turnEnded': TurnEnded;
  'chat/toolCall': ToolCallNote;
  'chat/toolResult': ToolResultNote;
  'conversation/changed': ConversationChanged;
}
export type NotificationName = keyof Notifications;
export const NOTIFICATIONS: NotificationName[] = [
  'chat/turnStarted', 'chat/delta', 'chat/attempt', 'chat/turnEnded', 'chat/toolCall', 'chat/toolResult',
  'conversation/changed',
];

// ------------------------------------------------------------------ errors
export const ErrorCodes = {
  RequestCancelled: -32800,
  ConversationNotFound: -32001,
  ConversationExists: -32002,
  ModelNotFound: -32003,
  TurnFailed: -32004,
  LimitExceeded: -32005,
  ShuttingDown: -32006,
} as const;

/** The daemon could not be reached: `chatd` is missing, exited, or the socket refused us. */
export class ConnectError extends Error {
  constructor(message: string, readonly detail = '', readonly notFound = false) {
    super(message);
  }
}

export function isCancelled(err: unknown): boolean {
  return err instanceof ResponseError && err.code === ErrorCodes.RequestCancelled;
}

/** One line a person can act on, from any error a request can reject with. */
export function describeError(err: unknown): string {
  if (err instanceof ResponseError) {
    if (err.code === ErrorCodes.TurnFailed) {
      const attempts = (err.data as { attempts?: Attempt[] } | undefined)?.attempts ?? [];
      const tried = attempts.map((a) => `${a.model}: ${a.error ?? a.outcome}`).join('; ');
      return tried ? `${err.message} (${tried})` : err.message;
    }
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

// ------------------------------------------------------------------ the client
export type Transport =
  | { kind: 'stdio'; command: string; args?: string[]; env?: NodeJS.ProcessEnv; cwd?: string }
  | { kind: 'socket'; path: string };

export interface ConnectOptions {
  transport: Transport;
  clientName?: string;
  clientVersion?: string;
  workspaceRoot?: string;
  toolApproval?: boolean;
  /** Gives up on `initialize` after this long (the daemon may be starting: allow a few seconds). */
  timeoutMs?: number;
}

type Handler<T> = (params: T) => void;

export class ChatdClient {
  private readonly handlers = new Map<string, Set<Handler<unknown>>>();
  private readonly closeHandlers = new Set<(reason: string) => void>();
  private closed = false;
  private stderrTail = '';
  serverVersion = '';

  private constructor(
    private readonly conn: MessageConnection,
    private readonly child: cp.ChildProcess | undefined,
    private readonly socket: net.Socket | undefined,
  ) {
    for (const method of NOTIFICATIONS) {
      conn.onNotification(method, (params: unknown) => {
        for (const h of this.handlers.get(method) ?? []) {
          try { h(params); } catch (e) { console.error(`chatd: ${method} handler failed`, e); }
        }
      });
    }
    conn.onClose(() => this.markClosed('the connection to chatd closed'));
    conn.onError(([err]) => this.markClosed(`connection error: ${err.message}`));
  }

  /** Spawn `chatd stdio` (or open the socket), then `initialize`. Rejects with a ConnectError. */
  static async connect(opts: ConnectOptions): Promise<ChatdClient> {
    const t = opts.transport;
    let client: ChatdClient;
    if (t.kind === 'stdio') {
      const child = cp.spawn(t.command, [...(t.args ?? ['stdio'])], {
        env: t.env ?? process.env, cwd: t.cwd, stdio: ['pipe', 'pipe', 'pipe'],
      });
      const spawned = new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT'
          ? new ConnectError(`chatd was not found at ${t.command}`, err.message, true)
          : new ConnectError(`chatd could not be started (${t.command}): ${err.message}`, err.message)));
      });
      await spawned;
      const conn = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
      client = new ChatdClient(conn, child, undefined);
      child.stderr!.on('data', (d: Buffer) => { client.stderrTail = (client.stderrTail + d.toString()).slice(-4000); });
      child.on('exit', (code, signal) => client.markClosed(`chatd stdio exited (${signal ?? `code ${code}`})`));
    } else {
      const socket = await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(t.path);
        s.once('connect', () => resolve(s));
        s.once('error', (err: NodeJS.ErrnoException) => reject(new ConnectError(
          `cannot connect to the chatd socket ${t.path}: ${err.code ?? err.message}`, err.message, err.code === 'ENOENT')));
      });
      const conn = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
      client = new ChatdClient(conn, undefined, socket);
    }
    client.conn.listen();
    try {
      const init = client.conn.sendRequest<{ serverInfo: { version: string } }>('initialize', {
        clientInfo: { name: opts.clientName ?? 'chatd-node', version: opts.clientVersion ?? '0' },
        processId: process.pid,
        ...(opts.workspaceRoot ? { workspaceRoot: opts.workspaceRoot } : {}),
        capabilities: { toolApproval: !!opts.toolApproval },
      });
      const result = await Promise.race([init, client.whenClosed(), timeout(opts.timeoutMs ?? 20000)]);
      client.serverVersion = result.serverInfo?.version ?? '';
    } catch (err) {
      const detail = client.stderrTail.trim();
      client.dispose();
      const why = err instanceof Error ? err.message : String(err);
      throw new ConnectError(`chatd did not start: ${why}${detail ? `\n${lastLines(detail, 6)}` : ''}`, detail);
    }
    return client;
  }

  get isClosed(): boolean { return this.closed; }
  get stderr(): string { return this.stderrTail; }

  request<T = unknown>(method: string, params?: object): Promise<T> {
    if (this.closed) return Promise.reject(new ConnectError('not connected to chatd'));
    return params === undefined ? this.conn.sendRequest<T>(method) : this.conn.sendRequest<T>(method, params);
  }

  on<K extends NotificationName>(method: K, handler: Handler<Notifications[K]>): { dispose(): void } {
    let set = this.handlers.get(method);
    if (!set) this.handlers.set(method, (set = new Set()));
    set.add(handler as Handler<unknown>);
    return { dispose: () => set!.delete(handler as Handler<unknown>) };
  }

  /** Answer a daemon-to-client request (`tool/invoke`, `tool/approve`). */
  onRequest<P>(method: string, handler: (params: P) => unknown): void {
    this.conn.onRequest(method, async (params: unknown) => handler(params as P));
  }

  onClose(handler: (reason: string) => void): { dispose(): void } {
    this.closeHandlers.add(handler);
    return { dispose: () => this.closeHandlers.delete(handler) };
  }

  // typed helpers for the methods clients use most
  listConversations(query?: string): Promise<ConversationInfo[]> {
    return this.request<{ conversations: ConversationInfo[] }>('conversation/list', query ? { query } : {})
      .then((r) => r.conversations);
  }
  subscribe(name: string, afterSeq = 0): Promise<ConversationState> {
    return this.request<ConversationState>('conversation/subscribe', afterSeq ? { name, afterSeq } : { name });
  }
  unsubscribe(name: string): Promise<unknown> { return this.request('conversation/unsubscribe', { name }); }
  send(params: SendParams): Promise<SendResult> { return this.request<SendResult>('chat/send', params); }
  cancel(conversation: string): Promise<{ cancelled: boolean }> { return this.request('chat/cancel', { conversation }); }
  listModels(): Promise<ModelInfo[]> { return this.request<{ models: ModelInfo[] }>('models/list').then((r) => r.models); }

  dispose(): void {
    this.markClosed('closed by the client');
    this.conn.dispose();
    // End our side only: the daemon, and any turn we started, go on for other clients.
    this.socket?.on('error', () => undefined).end();
    if (this.child) {
      this.child.stdin?.on('error', () => undefined).end(); // the relay exits on EOF
      if (this.child.exitCode === null) this.child.kill('SIGTERM');
    }
  }

  private whenClosed(): Promise<never> {
    return new Promise((_, reject) => this.onClose((reason) => reject(new Error(reason))));
  }

  private markClosed(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.closeHandlers) h(reason);
  }
}

function timeout(ms: number): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer to initialize in ${ms / 1000}s`)), ms).unref());
}

function lastLines(text: string, n: number): string {
  return text.split('\n').slice(-n).join('\n');
}
