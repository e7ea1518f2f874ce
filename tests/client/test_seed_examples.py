"""The seed's five chat-loop programs (tests/client/seed_examples/, only the import line changed), each run
as a subprocess with scripted stdin against a real daemon and a fake provider (or the offline echo model
standing in for the model the program names), asserting on what the program prints and on what reached
the provider. None of them leaves a conversation behind in the user's store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chatd_client import Client
from client_fakes import (EXAMPLES, anthropic_error, anthropic_text_stream, openai_error, run_example, start_daemon,
                          text_stream, tool_call_stream, transcript, user_texts)

ECHO_AS_GPT = '[models.gpt-4o-mini]\nprovider = "echo"\n'
NOTICE = "[echo: the offline model; set an API key to use a real one]"


def _stored(daemon) -> list[str]:
    with Client(daemon.socket) as c:
        return [x["name"] for x in c.request("conversation/list", {})["conversations"]]


@pytest.fixture
def fake_daemon(tmp_path, providers):
    d = start_daemon(tmp_path, providers.env(), seed=1,
                     config="[routing]\nmax-attempts = 1\nfailure-cooldown = 0\n")
    providers.server.requests.clear()
    yield d
    d.stop()


@pytest.fixture
def echo_daemon(tmp_path):
    d = start_daemon(tmp_path, config=ECHO_AS_GPT)
    yield d
    d.stop()


def test_chat_loop_keeps_history_and_drops_a_failed_turn(fake_daemon, providers):
    def reply(req):
        said = user_texts(req)
        if said[-1] == "break please":
            return openai_error(400)
        return text_stream(f"Reply {len(said)}: you said {said[-1]}")

    providers.openai = reply
    out = run_example("chat_loop.py", fake_daemon, ["hello", "", "break please", "what did I say?", "quit"])
    assert transcript(out) == [
        "Chat started! Type 'quit' to exit.",
        "You:", "Assistant: Reply 1: you said hello",
        "You:", "You:", "Assistant: Sorry, I couldn't process that.",
        "You:", "Assistant: Reply 2: you said what did I say?",
        "You:", "Goodbye!"]
    last = providers.requests[-1].json
    assert last["model"] == "gpt-4o-mini"
    assert [(m["role"], m["content"]) for m in last["messages"]] == [
        ("developer", "You are a helpful assistant."), ("user", "hello"),
        ("assistant", "Reply 1: you said hello"), ("user", "what did I say?")]  # the failed turn was popped
    assert _stored(fake_daemon) == []


def test_commands_history_and_clear(echo_daemon):
    out = run_example("chat_with_commands.py", echo_daemon,
                      ["hello", "history", "clear", "history", "again", "history", "quit"])
    reply = f"{NOTICE} You said: hello"
    assert transcript(out) == [
        "Commands: 'quit', 'history', 'clear'",
        "You:", f"Assistant: {reply}",
        "You:", "Conversation History:",
        "  1. system: You are a helpful assistant. Keep responses concise.",
        "  2. user: hello",
        f"  3. assistant: {reply[:80]}" + ("..." if len(reply) > 80 else ""),
        "You:", "History cleared!",
        "You:", "Conversation History:",
        "  1. system: You are a helpful assistant. Keep responses concise.",
        "You:", f"Assistant: {NOTICE} You said: again",
        "You:", "Conversation History:",
        "  1. system: You are a helpful assistant. Keep responses concise.",
        "  2. user: again",
        f"  3. assistant: {NOTICE} You said: again",
        "You:"]
    assert _stored(echo_daemon) == []


def test_tools_loop_runs_the_scripts_own_functions(fake_daemon, providers):
    def reply(req):
        messages = req.json["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        results = {m["tool_call_id"]: m["content"] for m in messages[last_user:] if m["role"] == "tool"}
        said = messages[last_user]["content"]
        if said.startswith("Weather") and not results:
            return tool_call_stream([("call_w", "get_weather", {"city": "Paris"}),
                                     ("call_c", "calculate", {"expression": "6*7"})])
        if said.startswith("Weather"):
            return text_stream(f"{results['call_w']}, and 6*7 = {results['call_c']}.")
        if said.startswith("Try") and not results:
            return tool_call_stream([("call_x", "calculate", {"expression": "__import__('os')"})])
        if said.startswith("Try"):
            return text_stream(f"The calculator said: {results['call_x']}")
        earlier = sum(1 for m in messages if m["role"] == "tool")
        return text_stream(f"You're welcome ({earlier} tool results in history).")

    providers.openai = reply
    out = run_example("chat_with_tools.py", fake_daemon,
                      ["Weather in Paris, and what is 6*7?", "Try something odd", "thanks", "quit"])
    assert transcript(out) == [
        "Chat with tools! Type 'quit' to exit.",
        "You:", "Assistant: The weather in Paris is sunny and 72F, and 6*7 = 42.",
        "You:", "Assistant: The calculator said: Error: Invalid characters in expression",  # the script's, not the built-in
        "You:", "Assistant: You're welcome (3 tool results in history).",
        "You:"]
    first = providers.requests[0].json
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["calculate", "get_weather"]
    weather = next(t["function"] for t in first["tools"] if t["function"]["name"] == "get_weather")
    assert weather["description"] == "Get the current weather for a city."
    assert weather["parameters"]["properties"] == {"city": {"type": "string"}}
    # the last turn carried the whole history: both loops' calls and results, paired by id
    last = providers.requests[-1].json["messages"]
    assert [m["role"] for m in last] == ["developer", "user", "assistant", "tool", "tool", "assistant",
                                         "user", "assistant", "tool", "assistant", "user"]
    assert _stored(fake_daemon) == []


def test_sync_loop(echo_daemon):
    out = run_example("sync_chat_loop.py", echo_daemon, ["hello", "", "bye now", "quit"])
    assert transcript(out) == [
        "Chat started! Type 'quit' to exit.",
        "You:", f"Assistant: {NOTICE} You said: hello",
        "You:", "You:", f"Assistant: {NOTICE} You said: bye now",
        "You:"]
    assert _stored(echo_daemon) == []


def test_resilient_loop_falls_over_and_stays_sticky(fake_daemon, providers):
    """Two weighted models (the daemon's draw is seeded to pick claude first). Claude answers and is kept;
    when it fails the turn falls over to gpt-4.1, which is then kept although claude is healthy again;
    when both fail the program prints the error and drops the user message."""
    failing: set[str] = set()

    def claude(req):
        return anthropic_error(500) if "claude" in failing else anthropic_text_stream(f"claude heard {user_texts(req)}")

    def gpt(req):
        return openai_error(500) if "gpt" in failing else text_stream(f"gpt heard {json.dumps(user_texts(req))}")

    providers.anthropic, providers.openai = claude, gpt
    script = [("one", ()), ("two", ()), ("three", ("claude",)), ("four", ()), ("five", ("claude", "gpt")),
              ("six", ())]
    # the fake's behaviour changes between turns: stdin goes line by line, each reply read before the next
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "resilient_chat.py")], env=fake_daemon.env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline(), proc.stdout.readline()]  # banner and blank line
    for text, fail in script:
        failing.clear()
        failing.update(fail)
        proc.stdin.write(text + "\n")
        proc.stdin.flush()
        lines += [proc.stdout.readline(), proc.stdout.readline()]  # the reply and its blank line
    proc.stdin.write("quit\n")
    proc.stdin.close()
    out, err = proc.stdout.read(), proc.stderr.read()  # not communicate(): it would skip what readline buffered
    assert proc.wait(30) == 0 and err == "", err
    assert transcript("".join(lines) + out) == [
        "Chat started! Type 'quit' to exit.",
        "You:", "Assistant (claude-4-sonnet): claude heard ['one']",
        "You:", "Assistant (claude-4-sonnet): claude heard ['one', 'two']",
        "You:", 'Assistant (gpt-4.1): gpt heard ["one", "two", "three"]',
        "You:", 'Assistant (gpt-4.1): gpt heard ["one", "two", "three", "four"]',
        "You:", "Error: " + _error_line(lines),
        "You:", 'Assistant (gpt-4.1): gpt heard ["one", "two", "three", "four", "six"]',
        "You:"]
    assert "every model failed" in _error_line(lines)
    to_claude = providers.requests_to("anthropic")
    assert [user_texts(r)[-1] for r in to_claude] == ["one", "two", "three", "five"]  # not asked for four or six
    assert to_claude[0].json["max_tokens"] == 1024 and to_claude[0].json["system"] == "You are a helpful assistant."
    assert _stored(fake_daemon) == []


def _error_line(lines: list[str]) -> str:
    return next(x for x in "".join(lines).split("You: ") if x.startswith("Error: "))[len("Error: "):].strip()
