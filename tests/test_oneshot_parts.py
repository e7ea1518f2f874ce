"""The pieces that let a one-shot `chatd call` start fast, held to what they stand in for:
`chatd.stdjson` codes exactly as `json` does, and `chatd.paths` finds `$XDG_RUNTIME_DIR` as platformdirs
would, falling back to platformdirs whenever that directory is not private."""

from __future__ import annotations

import json
import os
import warnings

import platformdirs
import pytest
from hypothesis import given, settings, strategies as st

from chatd import stdjson
from chatd.paths import resolve

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_stdjson_writes_and_reads_what_json_does(value):
    assert stdjson.dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    pretty = stdjson.dumps_pretty(value)
    assert pretty == json.dumps(value, indent=2, ensure_ascii=False)
    for text in (pretty, json.dumps(value), f" \n{json.dumps(value)}\t"):
        assert repr(stdjson.loads(text)) == repr(json.loads(text))
        assert repr(stdjson.loads(text.encode())) == repr(json.loads(text))


@pytest.mark.parametrize("bad", ["", " ", "{", "[1,]", "1 2", '{"a" 1}', "nul", '"\x01"', "[1] x"])
def test_stdjson_rejects_what_json_rejects_with_jsons_error(bad):
    with pytest.raises(json.JSONDecodeError) as ours:
        stdjson.loads(bad)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(bad)
    assert str(ours.value) == str(theirs.value)


def test_stdjson_uses_a_default_for_other_types_and_refuses_without_one():
    assert stdjson.dumps({"s": {1, 2}}, default=sorted) == '{"s":[1,2]}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        stdjson.dumps({"s": {1}})


def _platformdirs_runtime() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return platformdirs.user_runtime_dir()


def test_a_private_xdg_runtime_dir_is_used_as_platformdirs_would(tmp_path, monkeypatch):
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.delenv("CHATD_HOME", raising=False)
    monkeypatch.delenv("CHATD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    paths = resolve()
    assert paths.runtime_dir == os.path.join(_platformdirs_runtime(), "chatd") == str(runtime / "chatd")
    assert paths.socket == str(runtime / "chatd" / "chatd.sock")
    assert paths.home is None and paths.data_dir == platformdirs.user_data_dir("chatd")


@pytest.mark.parametrize("problem", ["mode 0755", "a symlink", "a group-writable parent", "missing", "relative"])
def test_an_xdg_runtime_dir_that_is_not_private_goes_to_platformdirs(tmp_path, monkeypatch, problem):
    parent = tmp_path / "parent"
    parent.mkdir(mode=0o755)
    runtime = parent / "run-user"
    runtime.mkdir(mode=0o700)
    value = str(runtime)
    if problem == "mode 0755":
        runtime.chmod(0o755)
    elif problem == "a symlink":
        os.symlink(runtime, parent / "link")
        value = str(parent / "link")
    elif problem == "a group-writable parent":
        parent.chmod(0o775)
    elif problem == "missing":
        value = str(parent / "nowhere")
    else:
        value = "run-user"
    monkeypatch.delenv("CHATD_HOME", raising=False)
    monkeypatch.delenv("CHATD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    paths = resolve()
    assert paths.runtime_dir == os.path.join(_platformdirs_runtime(), "chatd")  # whatever platformdirs chose
