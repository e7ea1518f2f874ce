"""The peers' side of the turn workloads, run by bench/.peers-venv's Python (never chatd's venv): the official
`openai` SDK, `litellm.acompletion`, lm-deluge's `LLMClient` (a model registered to point at the fake) and
`llm`'s Python API, each on the same fake server and workload as chatd. Prints one JSON object.

    python bench/peer_worker.py turns LIB URL MODEL COUNT          -> {"us", "first_us", "deltas"} (streamed)
    python bench/peer_worker.py concurrent LIB URL MODEL N INFLIGHT -> {"wall", "ok", "errors"}
    python bench/peer_worker.py fail LIB URL MODEL COUNT           -> {"us": until the error surfaces}
    python bench/peer_worker.py suite LIB URL TURN,STREAM,FAIL N_TURNS N_STREAM N_CONC N_FAIL
                                   -> all four in one process (one import of the library per round)

LIB: openai | litellm | lmdeluge | llm. Import time is paid once per process, before any timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

clock = time.perf_counter
KEY = "sk-bench-0000"


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"turn {i}: hello there"}]


class Peer:
    """One library, set up to call `model` at `url` with retries off (the fake decides failures)."""

    def __init__(self, lib: str, url: str, model: str) -> None:
        self.lib, self.url, self.model = lib, url, model
        os.environ["OPENAI_API_KEY"] = KEY
        os.environ["FAKE_API_KEY"] = KEY
        if lib == "openai":
            import openai

            self.client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
        elif lib == "litellm":
            import litellm

            litellm.telemetry = False
            litellm.suppress_debug_info = True
            self.litellm = litellm
        elif lib == "lmdeluge":
            from lm_deluge import LLMClient
            from lm_deluge.models import register_model

            register_model(id=model, name=model, api_base=url, api_key_env_var="FAKE_API_KEY", api_spec="openai",
                           provider="openai")
            self.client = LLMClient(model, max_requests_per_minute=10_000_000, max_tokens_per_minute=10_000_000_000,
                                    max_concurrent_requests=100, max_attempts=1, progress="manual")
        elif lib == "llm":
            import llm

            self.llm = llm  # the model is declared in $LLM_USER_PATH/extra-openai-models.yaml
        else:
            raise SystemExit(f"unknown library {lib}")

    async def stream(self, i: int) -> tuple[float, float, int]:
        """One streamed turn: (total s, first delta s, deltas)."""
        t0 = clock()
        first, n = 0.0, 0
        if self.lib == "openai":
            resp = await self.client.chat.completions.create(model=self.model, messages=_messages(i), stream=True)
            async for chunk in resp:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or clock()
                    n += 1
        elif self.lib == "litellm":
            resp = await self.litellm.acompletion(model=f"openai/{self.model}", api_base=self.url, api_key=KEY,
                                                  messages=_messages(i), stream=True, num_retries=0)
            async for chunk in resp:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or clock()
                    n += 1
        elif self.lib == "llm":
            model = self.llm.get_async_model(self.model)
            async for text in model.prompt(f"turn {i}: hello there", stream=True):
                if text:
                    first = first or clock()
                    n += 1
        elif self.lib == "lmdeluge":  # lm-deluge's client does not stream; one completion per call
            out = await self.client.process_prompts_async([f"turn {i}: hello there"], show_progress=False)
            if out[0] is None or out[0].is_error:
                raise RuntimeError(getattr(out[0], "error_message", "failed"))
            first, n = clock(), 1
        t1 = clock()
        return t1 - t0, (first or t1) - t0, n

    def stream_sync_llm(self, i: int) -> tuple[float, float, int]:
        """`llm`'s everyday Python API: the sync model, streamed."""
        t0 = clock()
        first, n = 0.0, 0
        for text in self.llm.get_model(self.model).prompt(f"turn {i}: hello there", stream=True):
            if text:
                first = first or clock()
                n += 1
        t1 = clock()
        return t1 - t0, (first or t1) - t0, n

    async def complete(self, i: int) -> None:
        """One turn for throughput: non-streamed where the library's batch path is non-streamed."""
        if self.lib == "lmdeluge":
            raise RuntimeError("use batch")
        await self.stream(i)

    async def batch(self, n: int) -> tuple[int, int]:
        prompts = [f"prompt {i}: say something short" for i in range(n)]
        out = await self.client.process_prompts_async(prompts, show_progress=False)
        ok = sum(1 for r in out if r is not None and not r.is_error)
        return ok, n - ok


async def turns(peer: Peer, count: int) -> dict:
    out: dict[str, list] = {"us": [], "first_us": [], "deltas": []}
    for i in range(count + 2):
        if peer.lib == "llm":
            total, first, n = peer.stream_sync_llm(i)
        else:
            total, first, n = await peer.stream(i)
        if i >= 2:  # two warm-up turns: connection set-up and first-use imports are not the turn
            out["us"].append(total * 1e6)
            out["first_us"].append(first * 1e6)
            out["deltas"].append(n)
    return out


async def concurrent(peer: Peer, n: int, inflight: int) -> dict:
    await peer.stream(0) if peer.lib != "lmdeluge" else await peer.batch(2)
    if peer.lib == "lmdeluge":
        t0 = clock()
        ok, errors = await peer.batch(n)
        return {"wall": clock() - t0, "ok": ok, "errors": errors}
    sem = asyncio.Semaphore(inflight)
    errors: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            try:
                await peer.complete(i)
            except Exception as err:
                errors.append(repr(err)[:200])

    t0 = clock()
    await asyncio.gather(*(one(i) for i in range(n)))
    return {"wall": clock() - t0, "ok": n - len(errors), "errors": len(errors), "error_sample": errors[:2]}


async def fail(peer: Peer, count: int) -> dict:
    us = []
    for i in range(count):
        t0 = clock()
        try:
            await peer.stream(i)
        except Exception:
            pass
        us.append((clock() - t0) * 1e6)
    return {"us": us}


async def suite(lib: str, url: str, models: list[str], n_turns: int, n_stream: int, n_conc: int,
                n_fail: int) -> dict:
    turn, stream, failing = models
    out = {"turns": await turns(Peer(lib, url, turn), n_turns)}
    if lib != "lmdeluge":  # lm-deluge's client has no streaming API
        out["stream"] = await turns(Peer(lib, url, stream), n_stream)
    out["concurrent"] = await concurrent(Peer(lib, url, turn), n_conc, 100)
    out["fail"] = await fail(Peer(lib, url, failing), n_fail)
    return out


def main(argv: list[str]) -> None:
    if argv[0] == "suite":
        out = asyncio.run(suite(argv[1], argv[2], argv[3].split(","), *map(int, argv[4:8])))
        sys.stdout.write("\n" + json.dumps(out))
        return
    cmd, lib, url, model = argv[:4]
    peer = Peer(lib, url, model)
    if cmd == "turns":
        out = asyncio.run(turns(peer, int(argv[4])))
    elif cmd == "concurrent":
        out = asyncio.run(concurrent(peer, int(argv[4]), int(argv[5])))
    elif cmd == "fail":
        out = asyncio.run(fail(peer, int(argv[4])))
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
