"""`chatd`'s quick argument path (`chatd.cli._quick_args`) parses every form it takes exactly as argparse does,
and hands every other form to argparse."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatd.cli import _parser, _quick_args

QUICK = [
    ["call", "daemon/status"],
    ["call", "chat/send", '{"conversation": "a", "text": "hi"}'],
    ["call", "chat/send", "{}", "--no-start"],
    ["call", "conversation/list", "{}", "--follow", "--no-start"],
    ["call", "x", ""],
    ["send", "notes"],
    ["send", "notes", "hello there"],
    ["send", "notes", "hi", "--json"],
    ["send", "notes", "hi", "-m", "echo", "--model", "gpt-4o", "--no-start", "--json"],
    ["send", "notes", "", "-m", ""],
]

ARGPARSE = [
    [],
    ["status"],
    ["call"],
    ["call", "--help"],
    ["call", "--no-start", "chat/send", "{}"],  # options before positionals
    ["call", "m", "--no-start", "{}"],  # a positional after an option
    ["call", "m", "{}", "extra"],
    ["call", "m", "{}", "--no-s"],  # an abbreviation
    ["send", "notes", "-5 degrees"],
    ["send", "notes", "hi", "--param", "temperature=0"],
    ["send", "notes", "hi", "--tools"],
    ["send", "notes", "hi", "-m"],
    ["send", "notes", "hi", "-m", "--json"],
    ["send", "notes", "hi", "--follow"],  # call's flag, not send's
    ["send", "notes", "hi", "--", "x"],
    ["ls"],
]


@pytest.mark.parametrize("argv", QUICK, ids=" ".join)
def test_quick_forms_parse_as_argparse_does(argv):
    quick = _quick_args(argv)
    assert quick is not None, argv
    assert vars(quick) == vars(_parser().parse_args(argv))


@pytest.mark.parametrize("argv", ARGPARSE, ids=lambda a: " ".join(a) or "(none)")
def test_other_forms_go_to_argparse(argv):
    assert _quick_args(argv) is None


# What a one-shot command must not import, and why: argparse and typing (~10 ms, `_quick_args`), the engine
# (msgspec, httpx, pygls), json/re/enum/socket/signal/collections (~15 ms; chatd.stdjson, _socket, _signal)
# and platformdirs (~22 ms; chatd.paths finds $XDG_RUNTIME_DIR itself).
HEAVY = ("argparse", "typing", "msgspec", "httpx", "pygls", "json", "re", "enum", "socket", "signal", "collections",
         "platformdirs")


def _imported(daemon, env, *argv):
    """Run the installed `chatd` script as a user would; its output and the top-level modules it imported."""
    script = os.path.join(os.path.dirname(sys.executable), "chatd")
    proc = subprocess.run([sys.executable, "-X", "importtime", script, *argv], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc.stdout, names


@pytest.mark.parametrize("finds", ["CHATD_HOME", "XDG_RUNTIME_DIR"])
def test_a_quick_one_shot_imports_nothing_heavy(daemon, tmp_path, finds):
    env = dict(daemon.env)
    if finds == "XDG_RUNTIME_DIR":  # a login session's runtime directory, holding (a link to) this daemon's
        runtime = tmp_path / "xdg-runtime"
        runtime.mkdir(mode=0o700)
        os.symlink(daemon.paths.runtime_dir, runtime / "chatd")
        del env["CHATD_HOME"]
        env["XDG_RUNTIME_DIR"] = str(runtime)
    out, names = _imported(daemon, env, "call", "daemon/status", "{}", "--no-start")
    assert json.loads(out)["protocolVersion"] == 1
    assert not [m for m in HEAVY if m in names], sorted(names)
    out, names = _imported(daemon, env, "send", "one-shot", "hello there", "-m", "echo", "--no-start")
    assert "You said: hello there" in out
    assert not [m for m in HEAVY if m in names], sorted(names)
