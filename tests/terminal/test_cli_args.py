"""`chatd`'s quick argument path (`chatd.cli._quick_args`) parses every form it takes exactly as argparse does,
and hands every other form to argparse."""

from __future__ import annotations

import json
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


def test_a_quick_one_shot_imports_neither_argparse_nor_typing(daemon):
    code = ("import sys; from chatd.cli import main; rc = main(['call', 'daemon/status', '{}', '--no-start']);"
            " bad = [m for m in ('argparse', 'typing', 'msgspec', 'httpx', 'pygls') if m in sys.modules];"
            " sys.exit(rc or (print(bad, file=sys.stderr) or 9 if bad else 0))")
    proc = subprocess.run([sys.executable, "-c", code], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["protocolVersion"] == 1
