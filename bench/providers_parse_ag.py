"""Per-chunk parse cost of the Anthropic and Gemini adapters on a 2,000-chunk stream, against a plain
`json.loads` of every `data:` line in the same run (issue #3's target: <= 1.5x).

The streams are built from the recorded fixtures in /work/shared/wire: the Anthropic text stream's
`content_block_delta` events (and the Gemini text stream's chunks) repeated to 2,000 network chunks, one SSE
event per chunk, framed exactly as recorded. The adapter side is everything chatd does per chunk:
`SSEParser.feed` on the raw bytes plus the adapter's stream parser producing neutral events. Two baselines:
`json.loads` alone on pre-extracted `data:` payloads, and splitting the chunk into lines first.

Run: .venv/bin/python bench/providers_parse_ag.py
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "providers_ag"))

from ag_fakes import split_events, sse_fixture  # noqa: E402

from chatd.providers.anthropic import AnthropicStreamParser  # noqa: E402
from chatd.providers.gemini import GeminiStreamParser  # noqa: E402
from chatd.providers.sse import SSEParser  # noqa: E402

N = 2000
REPEATS = 30


def anthropic_chunks() -> list[bytes]:
    events = split_events(sse_fixture("anthropic_messages_text_stream.txt"))
    head = [e for e in events if b"message_start" in e or b"content_block_start" in e]
    deltas = [e for e in events if b"content_block_delta" in e]
    tail = [e for e in events if b"content_block_stop" in e or b"message_delta" in e or b"message_stop" in e]
    body = [deltas[i % len(deltas)] for i in range(N - len(head) - len(tail))]
    return head + body + tail


def gemini_chunks() -> list[bytes]:
    events = split_events(sse_fixture("gemini_text_stream.txt"))
    return [events[i % 2] for i in range(N - 1)] + [events[-1]]


def run_anthropic(chunks: list[bytes]) -> int:
    sse, parser, n = SSEParser(), AnthropicStreamParser(), 0
    for chunk in chunks:
        for event, data in sse.feed(chunk):
            n += len(parser.feed(event, data))
    return n


def run_gemini(chunks: list[bytes]) -> int:
    sse, parser, n = SSEParser(), GeminiStreamParser(), 0
    for chunk in chunks:
        for _event, data in sse.feed(chunk):
            n += len(parser.feed(data))
    return n + len(parser.finish())


def baseline_loads(payloads: list[bytes]) -> int:
    loads, n = json.loads, 0
    for payload in payloads:
        loads(payload)
        n += 1
    return n


def baseline_split(chunks: list[bytes]) -> int:
    loads, n = json.loads, 0
    for chunk in chunks:
        for line in chunk.splitlines():
            if line.startswith(b"data:"):
                loads(line[5:])
                n += 1
    return n


def best(fn, arg) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    print(f"{N} chunks per stream, best of {REPEATS} runs; per-chunk cost in microseconds")
    print(f"{'adapter':<10} {'adapter':>9} {'loads':>9} {'split+loads':>12} {'ratio':>7} {'ratio2':>7}")
    for name, chunks, fn in (("anthropic", anthropic_chunks(), run_anthropic),
                             ("gemini", gemini_chunks(), run_gemini)):
        assert len(chunks) == N
        payloads = [line[5:] for c in chunks for line in c.splitlines() if line.startswith(b"data:")]
        ours, loads, split = best(fn, chunks), best(baseline_loads, payloads), best(baseline_split, chunks)
        print(f"{name:<10} {ours / N * 1e6:>9.2f} {loads / N * 1e6:>9.2f} {split / N * 1e6:>12.2f} "
              f"{ours / loads:>6.2f}x {ours / split:>6.2f}x")
    print("ratio = adapter / json.loads alone; ratio2 = adapter / (line split + json.loads)")


if __name__ == "__main__":
    main()
