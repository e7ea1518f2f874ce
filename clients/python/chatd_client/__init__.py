"""chatd_client: talk to the user's chatd daemon from Python (imports no httpx, no pygls)."""

from chatd_client.connection import AsyncClient, Client, RpcError
from chatd_client.daemon import DaemonUnavailable, ensure_daemon

__all__ = ["AsyncClient", "Client", "DaemonUnavailable", "RpcError", "ensure_daemon"]
