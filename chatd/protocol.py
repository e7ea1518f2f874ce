"""The wire contract: every JSON-RPC method name, its params and result Structs, and the codec; the
error codes and framing live in `chatd.wire` (standard library only) and are re-exported here.

Imports msgspec, `chatd.wire` and the standard library only; the daemon, the Python client and the
benchmarks share it. Field names are snake_case here and camelCase on the wire (`rename="camel"`).
docs/protocol.md describes the same contract for people; keep the two in step.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import msgspec

from chatd.wire import (  # re-exported: to its users the contract is this one module
    CONVERSATION_EXISTS, CONVERSATION_NOT_FOUND, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, LIMIT_EXCEEDED,
    MAX_FRAME, MAX_HEADER, METHOD_NOT_FOUND, MODEL_NOT_FOUND, PARSE_ERROR, REQUEST_CANCELLED, SHUTTING_DOWN,
    STORAGE_ERROR, TURN_FAILED, FrameDecoder, FrameError, frame_line, frame_lsp,
)

PROTOCOL_VERSION = 1

# ---------------------------------------------------------------- method names
INITIALIZE = "initialize"
SHUTDOWN = "shutdown"
EXIT = "exit"
CANCEL_REQUEST = "$/cancelRequest"
DAEMON_STATUS = "daemon/status"
DAEMON_SHUTDOWN = "daemon/shutdown"
DAEMON_RELOAD = "daemon/reload"
MODELS_LIST = "models/list"
CONVERSATION_CREATE = "conversation/create"
CONVERSATION_LIST = "conversation/list"
CONVERSATION_GET = "conversation/get"
CONVERSATION_UPDATE = "conversation/update"
CONVERSATION_DELETE = "conversation/delete"
CONVERSATION_CLEAR = "conversation/clear"
CONVERSATION_FORK = "conversation/fork"
CONVERSATION_SUBSCRIBE = "conversation/subscribe"
CONVERSATION_UNSUBSCRIBE = "conversation/unsubscribe"
CHAT_SEND = "chat/send"
CHAT_CANCEL = "chat/cancel"
CHAT_BATCH = "chat/batch"
TOOLS_LIST = "tools/list"
TOOLS_REGISTER = "tools/register"
TOOLS_UNREGISTER = "tools/unregister"
# requests, daemon to client
TOOL_INVOKE = "tool/invoke"
TOOL_APPROVE = "tool/approve"
# notifications, daemon to client
CHAT_TURN_STARTED = "chat/turnStarted"
CHAT_DELTA = "chat/delta"
CHAT_ATTEMPT = "chat/attempt"
CHAT_TURN_ENDED = "chat/turnEnded"
CONVERSATION_CHANGED = "conversation/changed"
CHAT_TOOL_CALL = "chat/toolCall"
CHAT_TOOL_RESULT = "chat/toolResult"
CHAT_BATCH_PROGRESS = "chat/batchProgress"
# context windows, budgets and search (chatd/context.py, chatd/windowing.py)
CHAT_ESTIMATE = "chat/estimate"
CONVERSATION_COMPACT = "conversation/compact"
CONVERSATION_SEARCH = "conversation/search"
CHAT_CONTEXT_FITTED = "chat/contextFitted"
CHAT_BUDGET_WARNING = "chat/budgetWarning"

Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
"""A message sequence number as a param: SQLite's int64 range, never negative."""
StoredSeq = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
"""A sequence number the store can hold (a message's key packs its conversation and its seq, 32 bits each)."""
Count = Annotated[int, msgspec.Meta(ge=1, le=100_000)]

WILDCARD = "*"
"""`conversation/subscribe {name: "*"}` follows every conversation: creations, renames, deletions, turns."""

_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def valid_name(name: str) -> bool:
    """Conversation names: 1-200 printable characters, no surrounding whitespace, not the wildcard."""
    return bool(_NAME_RE.fullmatch(name)) and name == name.strip() and name != WILDCARD


class _Wire(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True):
    """Base for params: unknown fields are an error, so typos surface as -32602."""


class _Out(msgspec.Struct, rename="camel"):
    """Base for results and notifications."""


# ---------------------------------------------------------------- transcript parts
class TextPart(msgspec.Struct, tag="text", tag_field="type", rename="camel", omit_defaults=True):
    text: str


class ToolCallPart(msgspec.Struct, tag="toolCall", tag_field="type", rename="camel", omit_defaults=True):
    id: str
    name: str
    arguments: dict[str, Any] = {}


class ToolResultPart(msgspec.Struct, tag="toolResult", tag_field="type", rename="camel", omit_defaults=True):
    call_id: str
    name: str
    output: Any = None
    is_error: bool = False


class ThinkingPart(msgspec.Struct, tag="thinking", tag_field="type", rename="camel", omit_defaults=True):
    text: str = ""
    signature: str | None = None
    provider: str | None = None


Part = Union[TextPart, ToolCallPart, ToolResultPart, ThinkingPart]
Role = Literal["system", "user", "assistant", "tool"]
PreferModel = str  # "last" | "weighted" | a model name


class Usage(_Out, omit_defaults=False):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class Attempt(_Out):
    """One try of one model. "skipped": the model was cooling down (401/403, or used up its retries)."""

    model: str
    outcome: Literal["ok", "error", "cancelled", "skipped"]
    error: str | None = None
    latency_ms: float = 0.0
    started_at: float = 0.0  # Unix time
    status: int | None = None  # the HTTP status, when there was one
    kind: str | None = None  # the failure's class: rate_limit, overloaded, server, auth, bad_request, ...


class MessageOut(_Out):
    seq: int
    role: Role
    text: str
    parts: list[Part]
    model: str | None = None
    turn_id: str | None = None
    created_at: float = 0.0


class ConversationInfo(_Out):
    name: str
    system: str | None
    models: list[str]
    model_weights: list[float] | None
    prefer_model: str
    params: dict[str, Any]
    last_model: str | None
    message_count: int
    last_seq: int
    created_at: float
    updated_at: float


# ---------------------------------------------------------------- params and results
class InitializeParams(_Wire, forbid_unknown_fields=False):
    client_info: dict[str, Any] | None = None
    process_id: int | None = None
    workspace_root: str | None = None  # the root the built-in file tools are confined to
    root_path: str | None = None  # LSP spelling, accepted too
    capabilities: dict[str, Any] | None = None  # {"toolApproval": true} to be asked `tool/approve`


class NameParams(_Wire):
    name: str


class ConversationCreateParams(_Wire):
    name: str
    system: str | None = None
    models: list[str] | None = None
    model_weights: list[float] | None = None
    prefer_model: str | None = None
    params: dict[str, Any] | None = None


class ConversationListParams(_Wire):
    query: str | None = None
    limit: Count = 100


class ConversationGetParams(_Wire):
    name: str
    after_seq: Seq = 0


class SubscribeParams(_Wire):
    name: str
    after_seq: Seq = 0
    create: bool = False  # create the conversation if it does not exist


class ConversationUpdateParams(_Wire):
    name: str
    new_name: str | None = None
    system: str | None = None
    models: list[str] | None = None
    model_weights: list[float] | None = None
    prefer_model: str | None = None
    params: dict[str, Any] | None = None


class ConversationForkParams(_Wire):
    name: str
    new_name: str
    at_seq: Seq | None = None


class HistoryMessage(_Wire):
    """A message of a stateless turn's history (a client that keeps its own transcript)."""

    role: Literal["user", "assistant", "tool"]
    parts: list[Part]
    model: str | None = None


class ChatSendParams(_Wire):
    conversation: str | None = None  # None: a stateless turn on `history`; nothing is stored
    text: str | None = None
    parts: list[Part] | None = None
    prefer_model: str | None = None
    models: list[str] | None = None
    tools: list[str] | None = None
    max_rounds: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    temperature: float | None = None
    params: dict[str, Any] | None = None
    workspace: str | None = None
    history: list[HistoryMessage] | None = None  # stateless turns only
    system: str | None = None  # stateless turns only
    model_weights: list[float] | None = None  # with `models`: weights for this turn's draw
    client_ref: str | None = None  # echoed in chat/turnStarted, so the sender can tell its own turn


class ChatCancelParams(_Wire):
    conversation: str


class ConversationResult(_Out):
    conversation: ConversationInfo


class ActiveTurn(_Out):
    """A turn still streaming: what a client that opens the conversation mid-turn has missed."""

    turn_id: str
    user: MessageOut
    model: str
    text: str


class ConversationGetResult(_Out):
    conversation: ConversationInfo
    messages: list[MessageOut]
    active_turn: ActiveTurn | None = None
    context: "ContextInfo | None" = None  # tokens used, context fill, cost so far (conversation/get)


class ConversationListResult(_Out):
    conversations: list[ConversationInfo]


class OkResult(_Out):
    ok: bool = True


class CancelResult(_Out):
    cancelled: bool


class SendResult(_Out):
    conversation: str | None
    turn_id: str
    message: MessageOut
    model_used: str
    usage: Usage
    cost: float
    finish_reason: str
    attempts: list[Attempt]
    latency_ms: float
    messages: list[MessageOut] = []  # every message the turn produced: tool calls, results, the answer


class ModelOut(_Out):
    name: str
    provider: str
    api_model: str
    context_window: int
    max_output: int
    input_price: float
    output_price: float
    capabilities: list[str]
    key_present: bool
    cooldown_until: float | None = None


class ModelsListResult(_Out):
    models: list[ModelOut]


class DaemonStatus(_Out):
    version: str
    protocol_version: int
    pid: int
    uptime_s: float
    store_path: str
    socket_path: str | None
    connections: int
    active_turns: int
    providers: dict[str, bool]
    open_fds: int = 0  # for leak checks and monitoring
    tasks: int = 0


class ToolInfo(_Out):
    name: str
    description: str
    parameters: dict[str, Any]
    origin: str
    side_effects: bool = False


class ToolsListResult(_Out):
    tools: list[ToolInfo]


class ToolDecl(_Wire):
    """A tool a client registers and runs itself (the daemon sends it `tool/invoke`)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = {}
    side_effects: bool = False
    timeout_s: float = 60.0


class ToolsRegisterParams(_Wire):
    tools: list[ToolDecl]


class ToolsUnregisterParams(_Wire):
    names: list[str]


class ToolInvokeParams(_Out):
    conversation: str
    turn_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolApproveParams(_Out):
    conversation: str
    turn_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any]


# ---------------------------------------------------------------- notifications
class TurnStarted(_Out):
    conversation: str
    turn_id: str
    user: MessageOut
    model: str
    client_ref: str | None = None


class ChatDelta(_Out):
    conversation: str
    turn_id: str
    text: str


class ChatAttempt(_Out):
    """A failed try. `next` says what follows: "retry" (same model, after `delayS`), "fallback" (the next
    model), or "give up". Text streamed by the failed try is void: clients drop it from the turn."""

    conversation: str
    turn_id: str
    model: str
    outcome: str
    reason: str | None = None
    next: str = "fallback"
    delay_s: float = 0.0
    kind: str | None = None  # the failure's class (rate_limit, server, auth, timeout, ...)
    status: int | None = None  # its HTTP status, when there was one


class TurnEnded(_Out):
    conversation: str
    turn_id: str
    outcome: Literal["committed", "cancelled", "failed"]
    error: str | None = None


class ToolCallNote(_Out):
    conversation: str
    turn_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any]


class ToolResultNote(_Out):
    conversation: str
    turn_id: str
    call_id: str
    tool: str
    output: Any
    is_error: bool
    decision: str = "allow"  # allow | approved | denied | not run


class ConversationChanged(_Out):
    name: str
    kind: Literal["turn", "created", "updated", "renamed", "deleted", "cleared"]
    seq: int = 0
    messages: list[MessageOut] = []
    old_name: str | None = None
    usage: Usage | None = None  # kind "turn": the turn's usage and cost, for every watcher
    cost: float | None = None
    conversation: ConversationInfo | None = None  # its settings after the change (not for "deleted")


# ---------------------------------------------------------------- chat/batch
class BatchMessage(_Wire):
    role: Literal["user", "assistant"]
    text: str


class BatchPrompt(_Wire):
    """A prompt that is more than a text: an inline transcript (`messages`, stateless like a plain text),
    or `conversation` + `text`: the next turn of that stored conversation, committed as by chat/send."""

    text: str | None = None
    messages: list[BatchMessage] | None = None
    system: str | None = None
    conversation: str | None = None


class ChatBatchParams(_Wire):
    prompts: list[Union[str, BatchPrompt]]
    models: list[str] | None = None
    model_weights: list[float] | None = None
    prefer_model: str | None = None  # "weighted" (default: a draw per prompt) or a model name
    system: str | None = None
    max_new_tokens: int | None = None
    temperature: float | None = None
    params: dict[str, Any] | None = None
    max_concurrent: int | None = None  # this batch's prompts in flight (the daemon-wide cap still applies)
    batch_id: str | None = None  # echoed in chat/batchProgress (default: a generated id)


class BatchError(_Out):
    code: int
    message: str


class BatchItem(_Out, omit_defaults=True):
    index: int
    ok: bool
    text: str | None = None
    model_used: str | None = None
    usage: Usage | None = None
    cost: float = 0.0
    finish_reason: str | None = None
    latency_ms: float = 0.0
    attempts: list[Attempt] = []  # given when there was more than one try, or none succeeded
    conversation: str | None = None
    error: BatchError | None = None


class ChatBatchResult(_Out):
    batch_id: str
    results: list[BatchItem]  # in input order
    done: int
    failed: int
    usage: Usage
    cost: float
    elapsed_ms: float


class BatchProgress(_Out):
    batch_id: str
    done: int
    failed: int
    total: int


# ---------------------------------------------------------------- context windows, budgets, search
class ContextInfo(_Out):
    """What `conversation/get` reports about size and spending."""

    model: str  # the model the next send would most likely use
    tokens: int  # estimated input tokens of the next request (after any compaction), without a new message
    context_window: int
    fill: float  # tokens / context_window
    input_tokens: int  # reported by the providers, over the turns stored (since the last clear)
    output_tokens: int
    cached_tokens: int
    cost: float  # USD over the turns stored
    lifetime_cost: float  # USD over the conversation's life (clears included; budgets count this)
    turns: int
    strategy: str
    compacted_upto_seq: int | None = None  # messages up to this seq are sent as a summary


class ChatEstimateParams(_Wire):
    conversation: str | None = None  # None (or a name not yet used): an empty conversation
    text: str = ""
    model: str | None = None  # default: the model the conversation would use next
    tools: list[str] | None = None
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None


class EstimateResult(_Out):
    conversation: str | None
    model: str
    tokens: int  # the whole request with `text`, before any fitting
    tokens_sent: int  # after the conversation's strategy (a summary's size is not known in advance)
    context_window: int
    reply_reserve: int
    fits: bool  # tokens + reply_reserve <= context_window, with nothing left out
    strategy: str
    action: str  # what fitting would do: none | dropped | cleared | cleared+dropped | summarize
    estimated_cost: float  # USD for the input sent
    max_cost: float  # plus a reply of reply_reserve tokens
    correction: float  # reported / estimated tokens learnt for this model (1.0 until a reply reports usage)


class ConversationCompactParams(_Wire):
    name: str
    model: str | None = None  # the summariser (default: [context] summary-model, else the cheapest of the provider)
    keep_turns: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None  # default [context] keep-turns (2)


class CompactResult(_Out):
    conversation: str
    compacted: bool  # false: nothing older than the kept turns
    upto_seq: int | None = None
    summary: str | None = None
    model: str | None = None
    tokens_before: int = 0
    tokens_after: int = 0


class ConversationSearchParams(_Wire):
    query: str
    limit: Count = 20
    conversation: str | None = None  # only this conversation


class SearchHit(_Out):
    conversation: str
    seq: int
    role: str
    snippet: str  # matches between ** and **
    created_at: float


class SearchResult(_Out):
    results: list[SearchHit]


class ContextFitted(_Out):
    """A request left something out to fit the model's window (the stored history is unchanged)."""

    conversation: str
    turn_id: str
    model: str
    strategy: str
    action: str  # dropped | cleared | cleared+dropped | summarized | none (with a note)
    tokens_before: int
    tokens_after: int
    context_window: int
    reply_reserve: int
    dropped: int = 0  # messages left out
    dropped_seqs: list[int] = []
    cleared_seqs: list[int] = []  # tool results replaced by a placeholder naming the stored message
    summary_upto_seq: int | None = None
    summary_model: str | None = None
    note: str | None = None


class BudgetWarning(_Out):
    conversation: str
    turn_id: str
    scope: str  # conversation | daily
    unit: str  # cost | tokens
    limit: float
    spent: float
    estimate: float
    message: str


# ---------------------------------------------------------------- the codec
_encoder = msgspec.json.Encoder()
encode = _encoder.encode
decode = msgspec.json.decode


# ---------------------------------------------------------------- conversation/import (the export format)
CONVERSATION_IMPORT = "conversation/import"
EXPORT_FORMAT = "chatd.conversation"
EXPORT_VERSION = 1


class _Doc(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Base of the export document: every field always written (no defaults omitted), unknown ones refused."""


class ExportedConversation(_Doc):
    name: str
    system: str | None = None
    models: list[str] = []
    model_weights: list[float] | None = None
    prefer_model: str = "last"
    params: dict[str, Any] = {}
    last_model: str | None = None
    last_seq: StoredSeq = 0  # may exceed the last message's seq (a clear never reuses seqs)
    created_at: float = 0.0
    updated_at: float = 0.0


class ExportedMessage(_Doc):
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**32 - 1)]  # a StoredSeq, never 0
    role: Role
    parts: list[Part]
    model: str | None = None
    turn_id: str | None = None
    created_at: float = 0.0


class ExportDocument(_Doc):
    """`chatd export NAME` writes this; `conversation/import` (and `chatd import FILE`) reads it back."""

    format: Literal["chatd.conversation"]
    version: Literal[1]
    conversation: ExportedConversation
    messages: list[ExportedMessage] = []


class ConversationImportParams(_Wire):
    document: ExportDocument
    name: str | None = None  # import under this name instead of the document's
