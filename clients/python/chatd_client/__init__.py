"""chatd_client: talk to the user's chatd daemon from Python (imports no httpx, no pygls).

Two layers: `Client`/`AsyncClient` speak the JSON-RPC protocol (docs/protocol.md) directly; `LLMClient`,
`Conversation`, `Message` and `Tool` are the seed library's API on top (`from chatd_client import ...` in
place of `from lm_deluge import ...`). The second layer is imported on first use, so `import chatd_client`
stays as fast as the connection module alone.
"""

from chatd_client.connection import Client, RpcError

_LAZY = {
    "AsyncClient": "chatd_client.aio",
    "DaemonUnavailable": "chatd_client.daemon", "ensure_daemon": "chatd_client.daemon",
    "LLMClient": "chatd_client.llm", "APIResponse": "chatd_client.llm", "Usage": "chatd_client.llm",
    "Conversation": "chatd_client.conversation", "Message": "chatd_client.conversation",
    "Text": "chatd_client.conversation", "ToolCall": "chatd_client.conversation",
    "ToolResult": "chatd_client.conversation", "Thinking": "chatd_client.conversation",
    "Tool": "chatd_client.tool",
}

__all__ = ["Client", "RpcError", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chatd_client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
