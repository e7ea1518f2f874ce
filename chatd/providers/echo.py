"""The built-in offline `echo` model: streams a deterministic reply word by word, no network, no key.

It exists so a newcomer sees the whole loop work and so streaming, cancel and sharing can be tested
without a provider. Options (model options or per-send params):
- `echoDelayMs`: pause before each word (default 0; the pause is a real `asyncio.sleep`, so cancel works);
- `echoFailAfter`: fail with a mid-stream error after that many words (for failure paths).
"""

from __future__ import annotations

import asyncio
import re
from typing import AsyncIterator

from chatd import protocol as p
from chatd.providers.base import Event, Finish, ProviderError, ProviderRequest, TextDelta, UsageEvent

NOTICE = "[echo: the offline model; set an API key to use a real one]"
_WORDS = re.compile(r"\S+\s*")


def reply_for(request: ProviderRequest) -> str:
    last = next((m for m in reversed(request.messages) if m.role == "user"), None)
    said = last.text if last is not None else ""
    return f"{NOTICE} You said: {said}"


class EchoProvider:
    name = "echo"

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Event]:
        opts = {**request.model.options, **request.options}
        delay = float(opts.get("echoDelayMs", 0)) / 1000.0
        fail_after = opts.get("echoFailAfter")
        words = _WORDS.findall(reply_for(request))
        for i, word in enumerate(words):
            if fail_after is not None and i >= int(fail_after):
                raise ProviderError("stream", "echo: injected failure mid-stream")
            if delay:
                await asyncio.sleep(delay)
            yield TextDelta(word)
        # Input tokens: the newest message's words only, so a turn costs the same at any history length.
        newest = request.messages[-1].text if request.messages else ""
        yield UsageEvent(p.Usage(input_tokens=len(newest.split()), output_tokens=len(words)))
        yield Finish("stop")
