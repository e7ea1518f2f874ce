"""Context windows, budgets, estimates and search through a real daemon subprocess (offline: a
tiny-window variant of the echo model, registered in config.toml)."""

from __future__ import annotations

import pytest

from chatd_client import Client, RpcError
from helpers import new_daemon

CONFIG = """
[models.tiny]
provider = "echo"
api-model = "echo"
context-window = 300
max-output = 40
input-price = 1.0
output-price = 2.0
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = new_daemon(tmp_path_factory.mktemp("ctx"))
    import os
    os.makedirs(os.path.dirname(d.paths.config_file), exist_ok=True)
    with open(d.paths.config_file, "w") as f:
        f.write(CONFIG)
    d.start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    c = Client(daemon.socket, timeout=30)
    yield c
    c._sock.close()


def _notes(c: Client, method: str) -> list[dict]:
    out = [m["params"] for m in c.notifications if m.get("method") == method]
    c.notifications.clear()
    return out


def _grow(c: Client, name: str, turns: int) -> list[dict]:
    """Send `turns` messages of ~35 words each; every send must succeed. Returns the fit notices."""
    notices = []
    for i in range(turns):
        text = f"turn {i}: " + " ".join(f"w{i}x{j}" for j in range(35))
        result = c.request("chat/send", {"conversation": name, "text": text})
        assert result["modelUsed"] == "tiny" and f"turn {i}:" in result["message"]["text"]
        notices += _notes(c, "chat/contextFitted")
    return notices


@pytest.mark.parametrize("strategy", ["drop-oldest", "clear-tool-results", "summarize"])
def test_a_conversation_past_the_window_keeps_working(client, strategy):
    name = f"long-{strategy}"
    client.request("conversation/create", {"name": name, "models": ["tiny"],
                                           "params": {"contextStrategy": strategy}})
    notices = _grow(client, name, 10)
    assert notices, "the clients were told what was left out"
    for n in notices:
        assert n["conversation"] == name and n["strategy"] == strategy and n["model"] == "tiny"
        assert n["tokensAfter"] + n["replyReserve"] <= n["contextWindow"] < n["tokensBefore"] + n["replyReserve"]
    if strategy == "summarize":
        assert any(n["action"] == "summarized" and n["summaryUptoSeq"] for n in notices)
    else:
        assert all(n["action"] == "dropped" and n["droppedSeqs"] for n in notices)
    got = client.request("conversation/get", {"name": name})
    assert len(got["messages"]) == 20  # every original turn is still stored
    assert [m["seq"] for m in got["messages"]] == list(range(1, 21))
    ctx = got["context"]
    assert ctx["model"] == "tiny" and ctx["contextWindow"] == 300 and ctx["turns"] == 10
    assert ctx["inputTokens"] > 0 and ctx["cost"] > 0 and ctx["strategy"] == strategy
    if strategy == "summarize":
        assert ctx["compactedUptoSeq"] and ctx["fill"] < 1.5
    else:
        assert ctx["fill"] > 1  # the whole history no longer fits: fitting is what kept it working


def test_compact_on_demand_keeps_history(client):
    client.request("conversation/create", {"name": "compact-me", "models": ["tiny"]})
    for i in range(3):
        client.request("chat/send", {"conversation": "compact-me", "text": f"fact {i}: the code is {i * 7}"})
    before = client.request("conversation/get", {"name": "compact-me"})["context"]["tokens"]
    done = client.request("conversation/compact", {"name": "compact-me", "keepTurns": 1})
    assert done["compacted"] and done["uptoSeq"] == 4 and done["summary"] and done["model"] == "echo"
    got = client.request("conversation/get", {"name": "compact-me"})
    assert len(got["messages"]) == 6 and got["context"]["compactedUptoSeq"] == 4
    assert got["context"]["tokens"] != before
    again = client.request("conversation/compact", {"name": "compact-me", "keepTurns": 5})
    assert again == {"conversation": "compact-me", "compacted": False, "uptoSeq": None, "summary": None,
                     "model": None, "tokensBefore": 0, "tokensAfter": 0}
    client.request("chat/send", {"conversation": "compact-me", "text": "still here?"})


def test_estimate(client):
    est = client.request("chat/estimate", {"conversation": "nobody-yet", "text": "hello there", "model": "tiny"})
    assert est["model"] == "tiny" and est["fits"] and 3 <= est["tokens"] <= 12
    assert est["estimatedCost"] == pytest.approx(est["tokensSent"] * 1e-6)
    assert est["maxCost"] > est["estimatedCost"] and est["action"] == "none"
    huge = client.request("chat/estimate", {"conversation": "nobody-yet", "text": "word " * 400, "model": "tiny"})
    assert not huge["fits"] and huge["tokens"] > 300


def test_a_budget_blocks_a_send_and_commits_nothing(client):
    client.request("conversation/create", {"name": "budget", "models": ["tiny"],
                                           "params": {"budget": {"cost": 0.00003}}})
    client.request("chat/send", {"conversation": "budget", "text": "one two three"})
    client.notifications.clear()
    with pytest.raises(RpcError) as err:
        client.request("chat/send", {"conversation": "budget", "text": "four five six"})
    assert err.value.code == -32005 and "budget" in err.value.message and "nothing was sent" in err.value.message
    assert err.value.data["scope"] == "conversation" and err.value.data["unit"] == "cost"
    assert not [m for m in client.notifications if m.get("method") == "chat/turnStarted"]
    assert len(client.request("conversation/get", {"name": "budget"})["messages"]) == 2
    client.request("conversation/update", {"name": "budget", "params": {"budget": {"cost": 0.00003,
                                                                                   "action": "warn"}}})
    client.request("chat/send", {"conversation": "budget", "text": "four five six"})
    warnings = _notes(client, "chat/budgetWarning")
    assert warnings and warnings[0]["scope"] == "conversation"
    assert len(client.request("conversation/get", {"name": "budget"})["messages"]) == 4


def test_search_finds_snippets_and_forgets(client):
    client.request("chat/send", {"conversation": "s-one", "text": "the zanzibar protocol uses quokka frames"})
    client.request("chat/send", {"conversation": "s-two", "text": "nothing about marsupials here, only zanzibar"})
    hits = client.request("conversation/search", {"query": "quokka"})["results"]
    assert {h["conversation"] for h in hits} == {"s-one"}
    assert any("**quokka**" in h["snippet"] for h in hits) and {h["role"] for h in hits} == {"user", "assistant"}
    both = client.request("conversation/search", {"query": "zanzibar", "limit": 50})["results"]
    assert {h["conversation"] for h in both} >= {"s-one", "s-two"}
    only = client.request("conversation/search", {"query": "zanzibar", "conversation": "s-two"})["results"]
    assert {h["conversation"] for h in only} == {"s-two"}
    assert client.request("conversation/search", {"query": 'quok* "( AND'})["results"] == []  # no syntax error
    assert client.request("conversation/search", {"query": "quok*"})["results"]
    client.request("conversation/fork", {"name": "s-one", "newName": "s-fork"})
    forked = client.request("conversation/search", {"query": "quokka"})["results"]
    assert {h["conversation"] for h in forked} == {"s-one", "s-fork"}
    client.request("conversation/delete", {"name": "s-one"})
    client.request("conversation/clear", {"name": "s-fork"})
    assert client.request("conversation/search", {"query": "quokka"})["results"] == []
