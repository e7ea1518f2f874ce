"""`chat/batch`: many prompts, answered in input order (the seed library's `process_prompts` job).

A prompt is a text or an inline transcript, both stateless: they are not stored, so a 10,000-prompt
batch creates no conversations and its answers live in the reply alone. A prompt naming a stored
conversation (`{conversation, text}`) is that conversation's next turn, exactly as `chat/send` would
run it: committed, announced to its subscribers, serialised with other sends to it.

Every model call goes through `Router.run`, so retries, fallbacks, cooldowns, the per-model rate limits
and the daemon-wide concurrency cap apply as they do to `chat/send`. At most `maxConcurrent` workers pull
prompts in order (memory stays O(workers), not O(prompts)); one failed prompt is that prompt's error,
never the batch's. Progress goes to the caller as `chat/batchProgress`, at most every 100 ms and at the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

from chatd import protocol as p
from chatd.errors import ChatdError, InvalidArgument, LimitExceeded
from chatd.providers.base import (
    Finish, ProviderError, ProviderRequest, TextDelta, UsageEvent, cost_of, whole_reply,
)
from chatd.ratelimit import estimate_tokens
from chatd.routing import WEIGHTED, AllModelsFailed, StallGuard

if TYPE_CHECKING:
    from chatd.conversation import ConversationService

log = logging.getLogger("chatd.batch")

MAX_PROMPTS = 100_000
PROGRESS_EVERY_S = 0.1
Notify = Callable[[str, Any], None]


class _Answer:
    __slots__ = ("text", "usage", "reason")

    def __init__(self, text: str, usage: p.Usage, reason: str) -> None:
        self.text, self.usage, self.reason = text, usage, reason


def _tokens(answer: _Answer) -> int:
    return answer.usage.input_tokens + answer.usage.output_tokens


def _noop(*_: Any) -> None:
    return None


class Batch:
    def __init__(self, service: "ConversationService", params: p.ChatBatchParams, origin: object | None,
                 notify: Notify) -> None:
        self.service = service
        self.router = service.router
        self.params = params
        self.origin = origin
        self.notify = notify
        self.id = params.batch_id or uuid.uuid4().hex
        self.options: dict[str, Any] = dict(params.params or {})
        if params.max_new_tokens is not None:
            self.options["maxNewTokens"] = params.max_new_tokens
        if params.temperature is not None:
            self.options["temperature"] = params.temperature
        self.models = params.models or service.default_models
        self.weights = params.model_weights if params.models else None
        self.prefer = params.prefer_model or WEIGHTED
        self.done = self.failed = 0
        self._last_progress = 0.0

    def check(self) -> None:
        params, n = self.params, len(self.params.prompts)
        if n > MAX_PROMPTS:
            raise LimitExceeded(f"chat/batch takes at most {MAX_PROMPTS} prompts ({n} given); split the batch")
        if params.max_concurrent is not None and params.max_concurrent < 1:
            raise InvalidArgument("maxConcurrent must be at least 1")
        self.service._check_models(params.models, params.model_weights, params.prefer_model)
        for i, prompt in enumerate(params.prompts):
            if isinstance(prompt, str):
                continue
            if prompt.conversation is not None:
                if not prompt.text or prompt.messages is not None:
                    raise InvalidArgument(f"prompts[{i}]: a conversation prompt takes `text` (its next turn)"
                                          " and no `messages`")
            elif (prompt.text is None) == (prompt.messages is None):
                raise InvalidArgument(f"prompts[{i}] needs exactly one of text or messages")
            elif prompt.messages is not None and (not prompt.messages or prompt.messages[-1].role != "user"):
                raise InvalidArgument(f"prompts[{i}].messages must end with a user message")

    async def run(self) -> p.ChatBatchResult:
        self.check()
        prompts = self.params.prompts
        results: list[p.BatchItem | None] = [None] * len(prompts)
        started = time.perf_counter()
        indexes = iter(range(len(prompts)))  # shared: each worker takes the next prompt

        async def worker() -> None:
            for i in indexes:
                item = await self._one(i, prompts[i])
                results[i] = item
                self.done += 1
                self.failed += not item.ok
                self._progress(len(prompts))

        workers = min(len(prompts), self.params.max_concurrent or self.router.limits.max_concurrent)
        if workers:
            async with asyncio.TaskGroup() as tg:
                for _ in range(workers):
                    tg.create_task(worker())
        items = [r for r in results if r is not None]
        usage = p.Usage(input_tokens=sum(r.usage.input_tokens for r in items if r.usage),
                        output_tokens=sum(r.usage.output_tokens for r in items if r.usage),
                        cached_tokens=sum(r.usage.cached_tokens for r in items if r.usage),
                        reasoning_tokens=sum(r.usage.reasoning_tokens for r in items if r.usage))
        self._progress(len(prompts), final=True)
        return p.ChatBatchResult(batch_id=self.id, results=items, done=self.done, failed=self.failed, usage=usage,
                                 cost=sum(r.cost for r in items), elapsed_ms=(time.perf_counter() - started) * 1000)

    def _progress(self, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            self.notify(p.CHAT_BATCH_PROGRESS, p.BatchProgress(batch_id=self.id, done=self.done, failed=self.failed,
                                                               total=total))

    async def _one(self, index: int, prompt: str | p.BatchPrompt) -> p.BatchItem:
        t0 = time.perf_counter()
        try:
            if isinstance(prompt, p.BatchPrompt) and prompt.conversation is not None:
                return await self._turn(index, prompt, t0)
            return await self._stateless(index, prompt, t0)
        except AllModelsFailed as err:
            return p.BatchItem(index=index, ok=False, attempts=err.attempts, latency_ms=_ms(t0),
                               error=p.BatchError(code=p.TURN_FAILED, message=str(err)))
        except ChatdError as err:
            return p.BatchItem(index=index, ok=False, latency_ms=_ms(t0), attempts=(err.data or {}).get("attempts", [])
                               if isinstance(err.data, dict) else [],
                               error=p.BatchError(code=err.code, message=err.message))
        except Exception:
            log.exception("batch %s: prompt %d failed", self.id, index)
            return p.BatchItem(index=index, ok=False, latency_ms=_ms(t0), error=p.BatchError(
                code=p.INTERNAL_ERROR, message="internal error (see the daemon log)"))

    async def _stateless(self, index: int, prompt: str | p.BatchPrompt, t0: float) -> p.BatchItem:
        system = self.params.system
        if isinstance(prompt, str):
            turns = [("user", prompt)]
        else:
            system = prompt.system if prompt.system is not None else system
            turns = [(m.role, m.text) for m in prompt.messages] if prompt.messages else [("user", prompt.text or "")]
        messages = [p.MessageOut(seq=i + 1, role=role, text=text, parts=[p.TextPart(text)])  # type: ignore[arg-type]
                    for i, (role, text) in enumerate(turns)]
        tokens = estimate_tokens((system or "", *(t for _, t in turns)), len(turns), self.params.max_new_tokens)
        attempts: list[p.Attempt] = []
        plan = self.router.plan(self.models, self.weights, self.prefer, None)
        model, answer = await self.router.run(
            plan, lambda name: self._call(name, system, messages), _noop, attempts, tokens=tokens, usage=_tokens)
        spec = self.service.registry.get(model)
        return p.BatchItem(index=index, ok=True, text=answer.text, model_used=model, usage=answer.usage,
                           cost=cost_of(spec, answer.usage), finish_reason=answer.reason, latency_ms=_ms(t0),
                           attempts=attempts if len(attempts) > 1 else [])

    async def _call(self, name: str, system: str | None, messages: list[p.MessageOut]) -> _Answer:
        """One model call, text only (no tools are offered), non-streamed where the provider can (no
        deltas go anywhere), under the model's stall timeout: for a non-streamed call, nothing arrives
        until the whole reply, so the stall timeout bounds the whole call."""
        spec = self.service.registry.get(name)
        provider = self.service.providers.get(spec.provider)
        if provider is None:
            raise ProviderError("auth", f"no {spec.provider} provider is configured (no API key?)")
        request = ProviderRequest(model=spec, system=system, messages=messages, options=self.options)
        async with StallGuard(self.router.stall_timeout(name)) as guard:
            events = await whole_reply(provider, request, guard.tick)
        chunks: list[str] = []
        usage, reason = p.Usage(), "stop"
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                chunks.append(event.text)
            elif kind is UsageEvent:
                usage = event.usage
            elif kind is Finish:
                reason = event.reason
        return _Answer("".join(chunks), usage, reason)

    async def _turn(self, index: int, prompt: p.BatchPrompt, t0: float) -> p.BatchItem:
        params = self.params
        result = await self.service.send(p.ChatSendParams(
            conversation=prompt.conversation or "", text=prompt.text, models=params.models,
            prefer_model=params.prefer_model, max_new_tokens=params.max_new_tokens, temperature=params.temperature,
            params=params.params))
        return p.BatchItem(index=index, ok=True, text=result.message.text, model_used=result.model_used,
                           usage=result.usage, cost=result.cost, finish_reason=result.finish_reason,
                           latency_ms=_ms(t0), attempts=result.attempts if len(result.attempts) > 1 else [],
                           conversation=result.conversation)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


async def run_batch(service: "ConversationService", params: p.ChatBatchParams, origin: object | None,
                    notify: Notify) -> p.ChatBatchResult:
    return await Batch(service, params, origin, notify).run()
