"""`LLMClient` and `APIResponse`: the seed library's client API, answered by the user's daemon.

Every model call goes through the daemon (`chat/send`, or `chat/batch` when it serves it), so routing,
fallback, cooldowns, keys and cost accounting are the daemon's; this module only turns the seed's shapes
into requests. Failures come back as values (`response.is_error`, `response.error_message`), as the
seed's loops expect; nothing here raises for a model that fails.

Where a conversation's history goes:
- bound (`Conversation.load(name)`): the daemon's conversation is the history; a call mirrors it into
  `.messages` and sends the last user message as the next turn, stored and shared like any other.
- local, text only, no tools: the whole transcript goes inline in a stateless `chat/batch` prompt.
- local with tools (or tool history): a stateless `chat/send` carrying the transcript as `history`; the
  agent loop runs in the daemon (tools passed as functions run here, on `tool/invoke`) and the messages
  it produced come back in the result. Either way nothing is stored in the user's daemon.
"""

from __future__ import annotations

import asyncio
import atexit
import random
import weakref
from typing import Any, Sequence

import msgspec

from chatd import protocol as p
from chatd_client.connection import RpcError
from chatd_client.conversation import Conversation, Message, Text, Thinking
from chatd_client.daemon import DaemonUnavailable, ensure_daemon
from chatd_client.session import LoopThread, Session
from chatd_client.tool import Tool, as_tool


class Usage(p.Usage):
    """Tokens of one response (`input_tokens`, `output_tokens`, `cached_tokens`, `reasoning_tokens`)."""

    @property
    def cache_read_tokens(self) -> int:
        return self.cached_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class APIResponse:
    """One prompt's answer. `completion` is the reply text; on failure `is_error` is set and
    `error_message` says why (`attempts` lists every model tried)."""

    def __init__(self, *, content: Message | None = None, model_internal: str | None = None,
                 usage: Usage | None = None, cost: float | None = None, finish_reason: str | None = None,
                 attempts: list[dict[str, Any]] | None = None, latency_ms: float = 0.0,
                 error_message: str | None = None, error_code: int | None = None, conversation: str | None = None,
                 turn_id: str | None = None) -> None:
        self.content = content
        self.model_internal = model_internal
        self.usage = usage or Usage()
        self.cost = cost
        self.finish_reason = finish_reason
        self.attempts = attempts or []
        self.latency_ms = latency_ms
        self.error_message = error_message
        self.error_code = error_code
        self.conversation = conversation  # the daemon-side conversation that holds the turn, if stored
        self.turn_id = turn_id

    @property
    def is_error(self) -> bool:
        return self.error_message is not None

    @property
    def completion(self) -> str | None:
        return self.content.completion if self.content is not None else None

    @property
    def duration(self) -> float:
        return self.latency_ms / 1000

    @classmethod
    def from_send(cls, result: dict[str, Any]) -> "APIResponse":
        return cls(content=Message.from_wire(result["message"]), model_internal=result["modelUsed"],
                   usage=msgspec.convert(result.get("usage") or {}, Usage), cost=result.get("cost"),
                   finish_reason=result.get("finishReason"), attempts=result.get("attempts"),
                   latency_ms=result.get("latencyMs", 0.0), conversation=result.get("conversation"),
                   turn_id=result.get("turnId"))

    @classmethod
    def failed(cls, message: str, code: int | None = None, attempts: list[dict[str, Any]] | None = None) -> "APIResponse":
        tried = [a["model"] for a in attempts or () if a.get("outcome") != "skipped"]
        return cls(error_message=message, error_code=code, attempts=attempts,
                   model_internal=tried[-1] if tried else None)

    def __repr__(self) -> str:
        if self.is_error:
            return f"APIResponse(error={self.error_message!r})"
        return f"APIResponse(model={self.model_internal!r}, completion={(self.completion or '')[:60]!r})"


_CLIENTS: "weakref.WeakSet[LLMClient]" = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:  # runs before the interpreter stops the sync API's daemon threads
    for client in list(_CLIENTS):
        try:
            client.close()
        except Exception:
            pass


class LLMClient:
    """`LLMClient(models, model_weights=..., max_new_tokens=...)`: models by the daemon's names
    (`models/list`); no models means the daemon's default."""

    def __init__(self, models: str | Sequence[str] | None = None, *, model_weights: Sequence[float] | None = None,
                 max_new_tokens: int | None = None, temperature: float | None = None,
                 max_concurrent_requests: int = 32, max_rounds: int = 5, socket: str | None = None,
                 params: dict[str, Any] | None = None, **_ignored: Any) -> None:
        self.models = [models] if isinstance(models, str) else (list(models) if models is not None else None)
        if model_weights is not None and (self.models is None or len(model_weights) != len(self.models)):
            raise ValueError("model_weights needs one weight per model")
        self.model_weights = list(model_weights) if model_weights is not None else None
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_concurrent_requests = max_concurrent_requests
        self.max_rounds = max_rounds
        self.params = params  # per-request model options (e.g. the echo model's echoDelayMs)
        self._socket = socket
        self._sessions: dict[asyncio.AbstractEventLoop, Session] = {}
        self._sync: LoopThread | None = None
        self.use_batch = True  # stateless chat/batch for text-only local prompts, when the daemon has it
        _CLIENTS.add(self)

    # ------------------------------------------------------------ the seed's API
    async def process_prompts_async(self, prompts: Sequence[str | Conversation], *, tools: Sequence[Any] | None = None,
                                    max_rounds: int | None = None, **_ignored: Any) -> list[APIResponse]:
        """One response per prompt, in order. With `tools`, each prompt runs the agent loop."""
        tool_list = [as_tool(t) for t in tools or ()]
        try:
            session = await self._session()
            if not tool_list and self.use_batch and p.CHAT_BATCH in session.methods and all(map(_inline_ok, prompts)):
                return await self._batch(session, prompts, None)
        except (OSError, DaemonUnavailable) as err:
            return [APIResponse.failed(f"chatd is not reachable: {err}") for _ in prompts]
        limit = asyncio.Semaphore(self.max_concurrent_requests)

        async def one(prompt: str | Conversation) -> APIResponse:
            async with limit:
                conv = Conversation().user(prompt) if isinstance(prompt, str) else prompt
                return await self._turn(conv, tool_list, max_rounds, "weighted", agent=bool(tool_list))

        return list(await asyncio.gather(*(one(x) for x in prompts)))

    def process_prompts_sync(self, prompts: Sequence[str | Conversation], **kwargs: Any) -> list[APIResponse]:
        return self._run_sync(self.process_prompts_async(prompts, **kwargs))

    async def start(self, prompt: str | Conversation, *, prefer_model: str | None = "last",
                    tools: Sequence[Any] | None = None) -> APIResponse:
        """One prompt. `prefer_model="last"` keeps the conversation's `model_used` while it works and falls
        over to the other models when it fails; "weighted" draws by the weights; or a model's name."""
        conv = Conversation().user(prompt) if isinstance(prompt, str) else prompt
        tool_list = [as_tool(t) for t in tools or ()]
        return await self._turn(conv, tool_list, None, prefer_model or "weighted", agent=bool(tool_list))

    def start_sync(self, prompt: str | Conversation, **kwargs: Any) -> APIResponse:
        return self._run_sync(self.start(prompt, **kwargs))

    async def run_agent_loop(self, conversation: str | Conversation, *, tools: Sequence[Any] | None = None,
                             max_rounds: int | None = None, prefer_model: str | None = "last"
                             ) -> tuple[Conversation, APIResponse]:
        """Let the model call `tools` (functions run here, in this process) until it answers in text or
        `max_rounds` model calls are used. Returns the conversation, extended with the tool calls, their
        results and the answer, and the final response."""
        conv = Conversation().user(conversation) if isinstance(conversation, str) else conversation
        tool_list = [as_tool(t) for t in tools or ()]
        response = await self._turn(conv, tool_list, max_rounds, prefer_model or "weighted", agent=True)
        return conv, response

    def run_agent_loop_sync(self, conversation: str | Conversation, **kwargs: Any) -> tuple[Conversation, APIResponse]:
        return self._run_sync(self.run_agent_loop(conversation, **kwargs))

    async def aclose(self) -> None:
        """Close this client's connection on this loop."""
        for loop, session in list(self._sessions.items()):
            if loop is _running_loop():
                del self._sessions[loop]
                await session.close()

    def close(self) -> None:
        """Close this client's connections (also done at exit)."""
        if self._sync is not None and not self._sync.loop.is_closed():
            try:
                self._sync.run(self.aclose())
            except (OSError, RuntimeError):
                pass
            self._sync.stop()
            self._sync = None

    # ------------------------------------------------------------ plumbing
    def _run_sync(self, coro: Any) -> Any:
        if self._sync is None:
            self._sync = LoopThread()
            weakref.finalize(self, self._sync.stop).atexit = False  # at exit, _at_exit closes it in order
        return self._sync.run(coro)

    def socket(self) -> str:
        if self._socket is None:
            self._socket = ensure_daemon()
        return self._socket

    async def _session(self) -> Session:
        loop = asyncio.get_running_loop()
        for old in [lp for lp, s in self._sessions.items() if lp.is_closed() or (lp is loop and not s.alive)]:
            del self._sessions[old]
        session = self._sessions.get(loop)
        if session is None:
            socket = self.socket()
            session = self._sessions[loop] = await Session.open(socket)
        return session

    async def _turn(self, conv: Conversation, tools: list[Tool | str], max_rounds: int | None, prefer: str,
                    *, agent: bool) -> APIResponse:
        try:
            if not conv.messages or conv.messages[-1].role != "user":
                return APIResponse.failed("the conversation must end with a user message")
            session = await self._session()
            if not tools and self.use_batch and p.CHAT_BATCH in session.methods and _inline_ok(conv):
                prefer_model = self._prefer(prefer, conv.model_used, None, daemon_weights=True)
                return (await self._batch(session, [conv], prefer_model))[0]
            await session.register([t for t in tools if isinstance(t, Tool)])
            params = self._send_params(tools, max_rounds)
            if conv.name is not None:
                return await self._bound_turn(session, conv, params, prefer, agent)
            return await self._local_turn(session, conv, params, prefer, agent)
        except RpcError as err:
            attempts = err.data.get("attempts") if isinstance(err.data, dict) else None
            return APIResponse.failed(err.message, err.code, attempts)
        except (OSError, DaemonUnavailable) as err:
            return APIResponse.failed(f"chatd is not reachable: {err}")

    def _send_params(self, tools: list[Tool | str], max_rounds: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.max_new_tokens is not None:
            params["maxNewTokens"] = self.max_new_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.params:
            params["params"] = self.params
        if tools:
            params["tools"] = [t.name if isinstance(t, Tool) else t for t in tools]
            params["maxRounds"] = max_rounds or self.max_rounds
        return params

    def _prefer(self, prefer: str, model_used: str | None, last_model: str | None, *, daemon_weights: bool) -> str:
        """The send's preferModel. "last" sticks to the conversation's `model_used` (what the script recorded
        with `with_response`), else to the daemon-side last model, else draws by weight. Where the
        daemon-side conversation does not hold this client's weights (a bound one), the draw is done here."""
        if prefer not in ("last", "weighted"):
            return prefer
        if prefer == "last" and model_used is not None and (self.models is None or model_used in self.models):
            return "last" if model_used == last_model else model_used
        if prefer == "last" and last_model is not None and (self.models is None or last_model in self.models):
            return "last"
        if not daemon_weights and self.models and self.model_weights:
            return random.choices(self.models, weights=self.model_weights, k=1)[0]
        return "weighted"

    # ------------------------------------------------------------ bound conversations
    async def _bound_turn(self, session: Session, conv: Conversation, params: dict[str, Any], prefer: str,
                          agent: bool) -> APIResponse:
        assert conv.name is not None
        user = conv.messages[-1]
        kept = [m for m in conv.messages if m.seq is not None]
        try:
            got = await session.request(p.CONVERSATION_GET, {"name": conv.name, "afterSeq": kept[-1].seq if kept else 0})
            if got["conversation"]["messageCount"] != len(kept) + len(got["messages"]):  # cleared or edited elsewhere
                kept, got = [], await session.request(p.CONVERSATION_GET, {"name": conv.name})
            last_model = got["conversation"]["lastModel"]
            system = got["conversation"]["system"]
        except RpcError as err:
            if err.code != p.CONVERSATION_NOT_FOUND:
                raise
            create: dict[str, Any] = {"name": conv.name, "system": conv.system_prompt}
            if self.models is not None:
                create.update(models=self.models, modelWeights=self.model_weights)
            await session.request(p.CONVERSATION_CREATE, {k: v for k, v in create.items() if v is not None})
            got, last_model, system = {"messages": []}, None, conv.system_prompt
        conv.messages = ([Message.system(system)] if system else []) + kept + \
            [Message.from_wire(m) for m in got["messages"]] + [user]
        send = {"conversation": conv.name, "parts": _wire_parts(user), **params,
                "preferModel": self._prefer(prefer, conv.model_used, last_model, daemon_weights=False)}
        if self.models is not None:
            send["models"] = self.models
        result = await session.request(p.CHAT_SEND, send)
        response = APIResponse.from_send(result)
        turn = session.committed(conv.name, result["message"]["seq"])
        if turn:
            conv.messages[-1] = Message.from_wire(turn[0])  # the user message, now with its seq
            if agent:
                conv.messages += [Message.from_wire(m) for m in turn[1:]]
                conv.model_used = response.model_internal
        return response

    # ------------------------------------------------------------ local conversations
    async def _local_turn(self, session: Session, conv: Conversation, params: dict[str, Any], prefer: str,
                          agent: bool) -> APIResponse:
        """A stateless `chat/send`: the script's transcript is the history; nothing is stored."""
        rest = [m for m in conv.messages if m.role != "system"]
        history, user = rest[:-1], rest[-1]
        send: dict[str, Any] = {
            "parts": _wire_parts(user), **params,
            "history": [{"role": m.role, "parts": _wire_parts(m), **({"model": m.model} if m.model else {})}
                        for m in history],
            "preferModel": self._prefer(prefer, conv.model_used, None, daemon_weights=True)}
        if conv.system_prompt is not None:
            send["system"] = conv.system_prompt
        if self.models is not None:
            send["models"] = self.models
            if self.model_weights is not None:
                send["modelWeights"] = self.model_weights
        result = await session.request(p.CHAT_SEND, send)
        response = APIResponse.from_send(result)
        if agent:
            for m in result["messages"]:
                wire = msgspec.convert(m, p.MessageOut)
                conv.messages.append(Message(wire.role, wire.parts, model=wire.model))
            conv.model_used = response.model_internal
        return response

    # ------------------------------------------------------------ stateless batches
    async def _batch(self, session: Session, prompts: Sequence[str | Conversation],
                     prefer_model: str | None) -> list[APIResponse]:
        items: list[Any] = []
        for prompt in prompts:
            if isinstance(prompt, str):
                items.append(prompt)
            else:
                item: dict[str, Any] = {"messages": [{"role": m.role, "text": m.completion or ""}
                                                     for m in prompt.messages if m.role != "system"]}
                if prompt.system_prompt is not None:
                    item["system"] = prompt.system_prompt
                items.append(item)
        params: dict[str, Any] = {"prompts": items, "maxConcurrent": self.max_concurrent_requests}
        if self.models is not None:
            params["models"] = self.models
            if self.model_weights is not None:
                params["modelWeights"] = self.model_weights
        if prefer_model not in (None, "weighted", "last"):
            params["preferModel"] = prefer_model
        params.update(self._send_params([], None))
        try:
            result = await session.request(p.CHAT_BATCH, params)
        except RpcError as err:
            return [APIResponse.failed(err.message, err.code) for _ in prompts]
        out = []
        for item in result["results"]:
            if item["ok"]:
                out.append(APIResponse(content=Message.ai(item.get("text") or ""), model_internal=item.get("modelUsed"),
                                       usage=msgspec.convert(item.get("usage") or {}, Usage), cost=item.get("cost"),
                                       finish_reason=item.get("finishReason"), attempts=item.get("attempts"),
                                       latency_ms=item.get("latencyMs", 0.0)))
            else:
                err = item.get("error") or {}
                out.append(APIResponse.failed(err.get("message", "failed"), err.get("code"), item.get("attempts")))
        return out


def _inline_ok(prompt: str | Conversation) -> bool:
    """Can this prompt go inline in a stateless `chat/batch` (text only, local, ending with the user)?"""
    if isinstance(prompt, str):
        return True
    rest = [m for m in prompt.messages if m.role != "system"]
    return prompt.name is None and bool(rest) and rest[-1].role == "user" and all(
        m.role in ("user", "assistant") and all(type(x) in (Text, Thinking) for x in m.parts) for m in rest)


def _wire_parts(message: Message) -> list[Any]:
    return msgspec.to_builtins([x for x in message.parts if type(x) is not Thinking])


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
