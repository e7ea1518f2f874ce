"""Token counting without a tokenizer download: a calibrated estimate per model family, cached per
message, corrected by the input tokens each provider reports.

Why an estimate: tiktoken fetches its encodings over the network on first use (they are not in the
wheel), and the packages that bundle them weigh ~40 MB; Anthropic and Gemini publish no offline
tokenizer at all. So text is split the way the BPE pre-tokenizers split it (words with their leading
space, contractions, runs of up to three digits, punctuation runs), and each piece costs one token
plus one more per ~6 characters beyond the first 7 for long words (BPE vocabularies hold whole common
words). Against o200k_base this lands within a few percent on English prose, Markdown and Python
(numbers in tests/context/test_estimate.py). On top, each family's request framing: per-message
overhead, reply priming, and how tool definitions are rendered.

`TokenCounter.observe` keeps a per-model ratio of reported to estimated input tokens (a moving
average, clamped to [0.5, 2]) and applies it to later estimates for that model.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Any, Iterable

import msgspec

from chatd import protocol as p

# the o200k pre-tokenizer, approximated with `re` (no \p{L}): a word may carry one leading
# non-letter (a space, `_`, `(`, ...), splits at a lower-to-upper case change, keeps its contraction
_PIECE = re.compile(
    r"(?:[^\r\n\w]|_)?(?:[A-Z]*[a-z]+|[A-Z]+[a-z]*|[^\W\d_]+)(?:'(?:[sdmt]|ll|ve|re))?"
    r"|\d{1,3}"  # digits, at most three per token
    r"| ?[^\s\w]+[\r\n/]*"  # punctuation runs
    r"|\s*[\r\n]+"  # newlines (with the indentation before them)
    r"|\s+(?!\S)|\s+",  # other whitespace
)
WORD = 9  # a word piece up to this many characters is one token (o200k holds whole common words)
STEP = 3  # and one more per this many characters beyond


def text_tokens(text: str) -> int:
    """The estimated BPE token count of `text` (o200k-like). Runs on the event loop for every new
    message, replies included: ASCII text (most of it) takes a fast path that looks again only at the
    pieces longer than a word (a 2.4 KB reply: ~330 -> ~210 µs, most of what is left the regex)."""
    if not text:
        return 0
    pieces = _PIECE.findall(text)
    if text.isascii():  # every piece is one token, plus what a long one costs beyond that (as below)
        n = len(pieces)
        for piece in [x for x in pieces if len(x) > WORD]:
            n += len(piece) // 16 if piece.isspace() else -(-(len(piece) - WORD) // STEP)
        return n
    return _counted(pieces)


class TextCount:
    """`text_tokens` of a text that arrives in pieces (a streamed reply), counted while it arrives, so the
    count is ready when the reply is stored and the next turn's prompt does not wait for it.

    The text is counted a run at a time, each run ending before a space that follows a non-space and
    precedes an ASCII letter: no regex piece crosses such a point (the piece after it is that space and
    the word), and a piece before it matches the same with or without the text beyond, so the runs'
    counts add up to exactly `text_tokens` of the whole."""

    __slots__ = ("tokens", "_tail", "_size", "_run")

    def __init__(self, run: int = 2048) -> None:
        self._run = run  # characters gathered before a run is counted
        self.tokens = 0  # of the runs counted so far
        self._tail: list[str] = []  # what came after them
        self._size = 0

    def add(self, text: str) -> None:
        self._tail.append(text)
        self._size += len(text)
        if self._size >= self._run:
            tail = "".join(self._tail)
            cut = _last_boundary(tail)
            if cut:
                self.tokens += text_tokens(tail[:cut])
                tail = tail[cut:]
            self._tail, self._size = [tail], len(tail)

    def total(self) -> int:
        """The whole text's count; the text so far is then counted and forgotten."""
        n = self.tokens + text_tokens("".join(self._tail))
        self.tokens, self._tail, self._size = 0, [], 0
        return n


def _last_boundary(text: str) -> int:
    """The index of the last space that follows a non-space and precedes an ASCII letter (0 if none)."""
    i = text.rfind(" ")
    while i > 0:
        after = text[i + 1:i + 2]
        if after.isascii() and after.isalpha() and not text[i - 1].isspace():
            return i
        i = text.rfind(" ", 0, i)
    return 0


def _counted(pieces: list[str]) -> int:
    """Tokens of regex pieces of any script."""
    n = 0
    for piece in pieces:
        size = len(piece)
        if not piece.isascii():
            wide = sum(1 for ch in piece if ord(ch) >= 0x2E80)  # CJK and friends: ~0.7 tokens a character
            if wide:
                n += max(1, (wide * 7 + 9) // 10) + (1 if size - wide > 1 else 0)
                continue
            size = (size * 3 + 1) // 2  # other scripts: longer in bytes, fewer merges
        if size <= WORD:
            n += 1
        elif piece.isspace():
            n += 1 + size // 16  # indentation runs are cheap
        else:
            n += 1 + -(-(size - WORD) // STEP)
    return n


class Family(msgspec.Struct, frozen=True):
    """How a provider frames a request, in tokens."""

    name: str
    per_message: int  # role markers around each message
    per_request: int  # fixed cost of a request (reply priming, BOS, ...)
    tools_base: int  # cost of offering any tools at all (Anthropic's tool-use system prompt)
    per_tool: int  # framing around each tool definition


# OpenAI: 3 per message + 3 priming the reply (OpenAI's cookbook); tools rendered as a TypeScript
# namespace. Anthropic: 346 tokens of tool-use system prompt (their docs, Claude 4, tool_choice auto).
# Gemini: counts the text parts only for a single turn (promptTokenCount 7 for a 7-token question).
FAMILIES: dict[str, Family] = {
    "openai": Family("openai", per_message=3, per_request=3, tools_base=7, per_tool=8),
    "anthropic": Family("anthropic", per_message=3, per_request=4, tools_base=346, per_tool=8),
    "gemini": Family("gemini", per_message=0, per_request=0, tools_base=4, per_tool=6),
}


def family_of(provider: str) -> Family:
    """The OpenAI-compatible family (Groq, Together, Ollama, ...) and the echo model count as OpenAI."""
    return FAMILIES.get(provider) or FAMILIES["openai"]


def _schema_text(schema: Any, indent: str = "") -> str:
    """A tool's parameters the way OpenAI renders them for the model (`name?: type, // description`)."""
    if not isinstance(schema, dict):
        return "any"
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    lines = []
    for name, sub in props.items():
        sub = sub if isinstance(sub, dict) else {}
        if sub.get("description"):
            lines.append(f"{indent}// {sub['description']}")
        kind = sub.get("type", "any")
        if "enum" in sub:
            kind = " | ".join(f'"{v}"' for v in sub["enum"])
        elif kind == "object":
            kind = "{\n" + _schema_text(sub, indent + "  ") + f"\n{indent}}}"
        elif kind == "array":
            kind = f"{(sub.get('items') or {}).get('type', 'any')}[]"
        lines.append(f"{indent}{name}{'' if name in required else '?'}: {str(kind).lower()},")
    return "\n".join(lines)


def tool_text(name: str, description: str, parameters: dict[str, Any]) -> str:
    head = f"// {description}\n" if description else ""
    return f"{head}type {name} = (_: {{\n{_schema_text(parameters)}\n}}) => any;"


def part_text(part: p.Part) -> str:
    """What a part costs, as text: tool calls as name + JSON arguments, results as their output."""
    if isinstance(part, p.TextPart):
        return part.text
    if isinstance(part, p.ToolCallPart):
        return part.name + " " + msgspec.json.encode(part.arguments).decode()
    if isinstance(part, p.ToolResultPart):
        out = part.output
        return out if isinstance(out, str) else msgspec.json.encode(out).decode()
    if isinstance(part, p.ThinkingPart):
        return part.text
    return ""


class TokenCounter:
    """Estimates per message (cached by turn id and seq), per request, corrected per model."""

    def __init__(self, cache_size: int = 100_000) -> None:
        self._cache: OrderedDict[tuple, int] = OrderedDict()
        self._size = cache_size
        self._ratio: dict[str, float] = {}
        self._texts: OrderedDict[str, int] = OrderedDict()  # replies counted while they streamed (TextCount)

    def remember(self, text: str, tokens: int) -> None:
        """`text_tokens(text)`, already counted: the next message holding this text will not count it again."""
        self._texts[text] = tokens
        if len(self._texts) > 64:
            self._texts.popitem(last=False)

    def text(self, text: str) -> int:
        known = self._texts.pop(text, None) if self._texts else None
        return text_tokens(text) if known is None else known

    def message(self, msg: p.MessageOut, family: Family) -> int:
        """One message's tokens with its framing; stored messages are cached (they never change)."""
        key = (msg.turn_id, msg.seq, family.name) if msg.seq and msg.turn_id else None
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        n = family.per_message
        for part in msg.parts:
            n += self.text(part.text) if type(part) is p.TextPart else text_tokens(part_text(part))
            if not isinstance(part, p.TextPart):
                n += 4  # the call/result envelope (ids, names)
        if key is not None:
            self._cache[key] = n
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return n

    def system(self, text: str | None, family: Family) -> int:
        return family.per_message + text_tokens(text) if text else 0

    def tools(self, tools: Iterable[Any], family: Family) -> int:
        tools = list(tools)
        if not tools:
            return 0
        n = family.tools_base
        for t in tools:
            n += family.per_tool + text_tokens(tool_text(t.name, t.description, t.parameters))
        return n

    def request(self, system: str | None, messages: Iterable[p.MessageOut], tools: Iterable[Any],
                family: Family) -> int:
        """Raw (uncorrected) estimate of a whole request's input tokens."""
        return (family.per_request + self.system(system, family) + self.tools(tools, family)
                + sum(self.message(m, family) for m in messages))

    # ------------------------------------------------------------ correction by reported usage
    def ratio(self, model: str) -> float:
        return self._ratio.get(model, 1.0)

    def corrected(self, model: str, raw: int) -> int:
        return int(math.ceil(raw * self.ratio(model)))

    def observe(self, model: str, estimated_raw: int, reported: int) -> None:
        """Learn from a provider's reported input tokens for a request estimated at `estimated_raw`."""
        if estimated_raw <= 0 or reported <= 0:
            return
        seen = min(max(reported / estimated_raw, 0.5), 2.0)
        old = self._ratio.get(model)
        self._ratio[model] = seen if old is None else old * 0.7 + seen * 0.3
