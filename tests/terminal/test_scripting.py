"""`chatd send | ls | show | rm` as shell scripts run them: real subprocesses, stdout, stderr, exit status."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

from chatd_client import Client
from chatd_client.commands import EXIT_NO_DAEMON, EXIT_REFUSED, EXIT_TURN_FAILED
from helpers import new_daemon

CHATD = [sys.executable, "-m", "chatd"]


def _run(env, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CHATD, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_send_prints_the_reply_as_it_streams(daemon):
    proc = subprocess.Popen([*CHATD, "send", "notes", "hi there", "--param", "echoDelayMs=100"], env=daemon.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fd, first = proc.stdout.fileno(), b""
        while b"[echo:" not in first:
            assert select.select([fd], [], [], 20)[0], "no output"
            chunk = os.read(fd, 4096)
            assert chunk, "stdout closed before the reply streamed"
            first += chunk
        with Client(daemon.socket) as c:  # part of the reply is out, and the turn is still running
            assert c.request("conversation/get", {"name": "notes"})["activeTurn"] is not None
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert (first + rest).decode() == "[echo: the offline model; set an API key to use a real one] You said: hi there\n"


def test_send_reads_stdin_and_json_is_the_whole_result(daemon):
    plain = _run(daemon.env, "send", "notes", stdin="from a pipe\n")
    assert plain.returncode == 0 and plain.stdout.endswith("You said: from a pipe\n")
    out = _run(daemon.env, "send", "notes", "as json", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # nothing but the JSON on stdout
    assert result["message"]["text"].endswith("You said: as json") and result["modelUsed"] == "echo"
    assert result["conversation"] == "notes" and result["message"]["seq"] == 4
    assert set(result["usage"]) >= {"inputTokens", "outputTokens"} and result["cost"] == 0


def test_send_exits_4_when_the_provider_fails_and_stores_nothing(daemon):
    out = _run(daemon.env, "send", "flaky", "hello", "--param", "echoFailAfter=2")
    assert out.returncode == EXIT_TURN_FAILED == 4
    assert "every model failed" in out.stderr and "the text above is void" in out.stderr
    out = _run(daemon.env, "send", "flaky", "hello", "--param", "echoFailAfter=0", "--json")
    assert out.returncode == 4
    error = json.loads(out.stdout)["error"]
    assert error["code"] == -32004 and error["data"]["attempts"][0]["outcome"] == "error"
    with Client(daemon.socket) as c:
        assert c.request("conversation/get", {"name": "flaky"})["messages"] == []


def test_send_exits_4_when_a_real_provider_is_unreachable(tmp_path):
    with socket_closed_port() as port:
        d = new_daemon(tmp_path, OPENAI_API_KEY="sk-test-unreachable", OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
        os.makedirs(d.paths.config_dir, exist_ok=True)
        with open(d.paths.config_file, "w") as f:
            f.write("[routing]\nmax-attempts = 1\nfailure-cooldown = 0\n")
        d.start()
        try:
            out = _run(d.env, "send", "n", "hello", "-m", "gpt-4o-mini")
        finally:
            d.stop()
    assert out.returncode == 4, out.stderr
    assert out.stdout == "" and "gpt-4o-mini" in out.stderr


def socket_closed_port():
    """A loopback port nothing listens on (bound, never listened, so connections are refused)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def held():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        try:
            yield s.getsockname()[1]
        finally:
            s.close()

    return held()


def test_no_daemon_exits_3(tmp_path):
    env = new_daemon(tmp_path).env
    for args in (["send", "x", "hi", "--no-start"], ["ls", "--no-start"], ["export", "x", "--no-start"]):
        out = _run(env, *args)
        assert out.returncode == EXIT_NO_DAEMON == 3, args
        assert "no chatd daemon is listening" in out.stderr and out.stdout == ""
    out = _run(env, "send", "x", "hi", "--no-start", "--json")
    assert out.returncode == 3 and "no chatd daemon" in json.loads(out.stdout)["error"]["message"]


def test_ls_show_and_rm(daemon):
    with Client(daemon.socket) as c:
        c.request("conversation/create", {"name": "first", "system": "Be brief."})
        c.request("chat/send", {"conversation": "first", "text": "# a heading\nand *more*"})
        c.request("conversation/create", {"name": "second"})
    listed = _run(daemon.env, "ls")
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[0] for r in rows] == ["second", "first"] and rows[1][1:3] == ["2 messages", "echo"]
    as_json = json.loads(_run(daemon.env, "ls", "fir", "--json").stdout)
    assert [c["name"] for c in as_json["conversations"]] == ["first"]
    shown = _run(daemon.env, "show", "first").stdout  # not a tty: markdown as written
    assert shown.startswith("# first\n\n> **System:** Be brief.\n\n## User\n\n# a heading\nand *more*\n\n"
                            "## Assistant (echo)\n\n[echo:")
    with Client(daemon.socket) as c:
        assert json.loads(_run(daemon.env, "show", "first", "--json").stdout)["messages"] == \
            c.request("conversation/get", {"name": "first"})["messages"]
    missing = _run(daemon.env, "show", "nope")
    assert missing.returncode == EXIT_REFUSED == 1 and "no conversation named 'nope'" in missing.stderr
    assert _run(daemon.env, "rm", "first", "second").stdout == "deleted first\ndeleted second\n"
    assert _run(daemon.env, "ls").stdout == ""
    assert _run(daemon.env, "rm", "first").returncode == 1
