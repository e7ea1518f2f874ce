"""Token estimates against the input usage the providers reported for the recorded wire fixtures, and
the pure fitting strategies (no daemon)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import protocol as p
from chatd.context import CLEARED, fit, groups
from chatd.providers.base import ToolSpec
from chatd.tokens import FAMILIES, TokenCounter, text_tokens

WEATHER_NYC = ToolSpec(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
WEATHER_BOSTON = ToolSpec(
    name="get_current_weather", description="Get the current weather in a given location",
    parameters={"type": "object", "required": ["location"], "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}})


def user(text: str, seq: int = 0) -> p.MessageOut:
    return p.MessageOut(seq=seq, role="user", text=text, parts=[p.TextPart(text)], turn_id=f"t{seq}" if seq else None)


# (family, user text, tools, reported input tokens, fixture it was recorded in)
CASES = [
    ("openai", "What's the weather like in SF?", [], 14, "openai_chat_text_stream.txt (gpt-4o)"),
    ("openai", "what's the weather in NYC?", [WEATHER_NYC], 44, "openai_chat_toolcall_stream.txt, request (B)"),
    ("openai", "What is the weather like in Boston today?", [WEATHER_BOSTON], 82,
     "openai_chat_toolcall_nonstream_response.txt, request (A)"),
    ("anthropic", "Say hello there!", [], 11, "anthropic_messages_text_stream.txt (claude-3-opus)"),
    ("gemini", "What is the capital of Wyoming?", [], 7, "gemini_text_stream.txt (gemini-2.0-flash)"),
]


@pytest.mark.parametrize("family,text,tools,reported,source", CASES, ids=[c[4] for c in CASES])
def test_estimate_within_ten_percent_of_reported_usage(family, text, tools, reported, source):
    estimated = TokenCounter().request(None, [user(text)], tools, FAMILIES[family])
    assert abs(estimated - reported) <= 0.10 * reported, (source, estimated, reported)


def test_reported_usage_corrects_later_estimates():
    counter = TokenCounter()
    assert counter.corrected("m", 100) == 100
    for _ in range(20):
        counter.observe("m", 100, 120)
    assert 118 <= counter.corrected("m", 100) <= 121
    counter.observe("m", 100, 10_000)  # absurd reports are clamped
    assert counter.ratio("m") <= 2.0


def test_text_estimate_scales_with_length():
    prose = "The quick brown fox jumps over the lazy dog. " * 200
    assert 1800 <= text_tokens(prose) <= 2200  # 10 tokens a sentence in o200k
    assert text_tokens("") == 0 and text_tokens("日本語のテキストです") >= 5


def _history_with_tools() -> list[p.MessageOut]:
    out, seq = [], 0
    for i in range(4):
        seq += 1
        out.append(user(f"question {i} " + "word " * 20, seq))
        seq += 1
        out.append(p.MessageOut(seq=seq, role="assistant", text="", turn_id=f"t{seq}",
                                parts=[p.ToolCallPart(id=f"c{i}", name="read", arguments={"path": f"f{i}"})]))
        seq += 1
        out.append(p.MessageOut(seq=seq, role="tool", text="", turn_id=f"t{seq}",
                                parts=[p.ToolResultPart(call_id=f"c{i}", name="read", output="data " * 150)]))
        seq += 1
        out.append(p.MessageOut(seq=seq, role="assistant", text=f"answer {i}", parts=[p.TextPart(f"answer {i}")],
                                turn_id=f"t{seq}"))
    return out


def test_drop_oldest_keeps_whole_turns_and_tool_pairs():
    history = _history_with_tools()
    f = fit(TokenCounter(), FAMILIES["openai"], "sys", history, [user("now")], [], 500, "drop-oldest")
    assert f.fits and f.dropped and f.tokens <= 500
    kept = f.messages[:-1]
    assert kept[0].role == "user"  # the transcript still starts with a user message
    calls = {x.id for m in kept for x in m.parts if isinstance(x, p.ToolCallPart)}
    results = {x.call_id for m in kept for x in m.parts if isinstance(x, p.ToolResultPart)}
    assert calls == results  # no call without its result, no result without its call
    assert [len(g) for g in groups(history)] == [4, 4, 4, 4]


def test_clear_tool_results_first_then_drop():
    history = _history_with_tools()
    counter = TokenCounter()
    f = fit(counter, FAMILIES["openai"], None, history, [user("now")], [], 700, "clear-tool-results")
    assert f.fits and f.cleared and not f.dropped  # clearing alone was enough
    cleared = [m for m in f.messages if m.seq in f.cleared]
    assert all(x.output == CLEARED.format(seq=m.seq) for m in cleared for x in m.parts)
    assert f.cleared == sorted(f.cleared) and f.cleared[0] == 3  # oldest first
    tight = fit(counter, FAMILIES["openai"], None, history, [user("now")], [], 120, "clear-tool-results")
    assert tight.fits and tight.dropped
    assert history[2].parts[0].output == "data " * 150  # the stored messages are never touched


def test_the_running_turn_is_never_cut():
    f = fit(TokenCounter(), FAMILIES["openai"], None, [], [user("word " * 500)], [], 100, "drop-oldest")
    assert not f.fits and len(f.messages) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=400)
       | st.lists(st.sampled_from(["w12", " ", "\n", "    ", "internationalization", "don't", "4096", "!!!", "_x",
                                   "ABCdef", "\t\t", "snake_case_name", "x" * 30, "\n" * 3,
                                   *(" " * k for k in range(8, 40)), *("y" * k for k in range(8, 20))]),
                  max_size=80).map("".join))
def test_the_ascii_fast_path_counts_as_the_general_one(text):
    from chatd.tokens import _PIECE, _counted

    assert text_tokens(text) == (_counted(_PIECE.findall(text)) if text else 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([" ", "  ", "\n", "\t", "word", "Word", "WORD", "don", "'t", "'s", "4096", "12",
                                 "!!", ".", ",", "_", "_x", "é", "日本", "naïve", "ABCdef", " a", "a ", "b", "\r\n",
                                 "x" * 30, " " * 12, "snake_case", "(", ")", "/"]), max_size=300).map("".join),
       st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30), st.integers(min_value=8, max_value=64))
def test_a_text_counted_as_it_streams_counts_as_the_whole(text, sizes, run):
    """TextCount counts runs cut at its boundaries; the sum must be text_tokens of the whole, exactly, for any
    chunking and any run length (short runs, so that every example cuts many times)."""
    from chatd.tokens import TextCount

    count = TextCount(run)
    i = k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        count.add(text[i:i + size])
        i, k = i + size, k + 1
    assert count.total() == text_tokens(text)
    assert count.total() == 0  # and it starts over


def test_a_streamed_reply_is_not_counted_again_for_the_next_prompt():
    """The count made while the reply streamed is handed to the counter with its text, and the next turn's
    history count takes it from there (and only once: a message's own count is cached by its turn and seq)."""
    from chatd.turn import Reply

    counter = TokenCounter()
    reply = Reply(counter)
    words = ["Once", " upon", " a", " time", ",", " there", " were", " 4096", " tokens", ".\n"] * 300
    for w in words:
        reply.add_text(w)
    reply.flush_text()
    text = "".join(words)
    assert reply.parts == [p.TextPart(text)]
    assert counter._texts == {text: text_tokens(text)}
    stored = p.MessageOut(seq=2, role="assistant", text=text, parts=reply.parts, turn_id="t1")
    assert counter.message(stored, FAMILIES["openai"]) == FAMILIES["openai"].per_message + text_tokens(text)
    assert counter._texts == {}
