"""Tools named in config.toml: Python functions (`module:function`) and an MCP server, end to end
through a daemon, and `daemon/reload` picking up a changed config."""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from chatd_client import AsyncClient  # noqa: E402
from helpers import new_daemon  # noqa: E402
from scripted_openai import FakeServer, openai_env, text_stream, tool_call_stream  # noqa: E402

MCP_SERVER = os.path.join(os.path.dirname(__file__), "mcp_server.py")

MODULE_V1 = '''
def shout(text: str, times: int = 1) -> str:
    """Shout the text.

    Args:
        text: What to shout.
        times: How many times.
    """
    return " ".join([text.upper()] * times)
'''
MODULE_V2 = '''
def whisper(text: str) -> str:
    """Whisper the text."""
    return text.lower()
'''


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_config_functions_and_mcp_server_serve_tools_and_reload(tmp_path):
    mods = tmp_path / "mods"
    _write(str(mods / "cfgtools.py"), MODULE_V1)

    def handler(req):
        messages = req.json["messages"]
        if messages[-1]["role"] == "tool":
            return text_stream("done")
        return tool_call_stream([("c1", "shout", {"text": "hey", "times": 2}),
                                 ("c2", "reverse", {"text": "abc"}),
                                 ("c3", "write_note", {"text": "x"})])

    async def main():
        async with FakeServer(handler) as server:
            d = new_daemon(tmp_path, **openai_env(server), PYTHONPATH=str(mods))
            _write(d.paths.config_file, f'''
[tools]
functions = ["cfgtools:shout"]
policy = [{{ tool = "write_note", action = "allow" }}]

[tools.mcp.test]
command = ["{sys.executable}", "{MCP_SERVER}"]
''')
            d.start()
            try:
                c = await AsyncClient.connect(d.socket)
                tools = {t["name"]: t for t in (await c.request("tools/list"))["tools"]}
                assert tools["shout"]["origin"] == "config"
                assert tools["shout"]["parameters"]["properties"]["times"] == {
                    "type": "integer", "default": 1, "description": "How many times."}
                assert tools["reverse"]["origin"] == "mcp:test" and tools["write_note"]["sideEffects"]
                await c.request("chat/send", {"conversation": "cfg", "text": "go", "models": ["gpt-4o-mini"],
                                              "tools": ["shout", "reverse", "write_note"]})
                history = (await c.request("conversation/get", {"name": "cfg"}))["messages"]
                outputs = {x["callId"]: (x["output"], x.get("isError", False)) for x in history[2]["parts"]}
                assert outputs == {"c1": ("HEY HEY", False), "c2": ("cba", False), "c3": ("noted: x", False)}

                _write(str(mods / "cfgtools.py"), MODULE_V2)
                _write(d.paths.config_file, '[tools]\nfunctions = ["cfgtools:whisper", "cfgtools:missing"]\n')
                reloaded = await c.request("daemon/reload")
                assert any("cfgtools:missing" in w for w in reloaded["warnings"])
                names = {t["name"]: t["origin"] for t in (await c.request("tools/list"))["tools"]}
                assert names.get("whisper") == "config" and "shout" not in names and "reverse" not in names
                assert names["calculate"] == "builtin"
                await c.close()
            finally:
                d.stop()

    asyncio.run(main())
