"""Who hears about what: subscriptions per conversation, and publishing a notification to them.

A notification is encoded once and written to every subscriber and to the connection that caused it.
Wildcard subscribers (`conversation/subscribe {name: "*"}`) hear every conversation's lifecycle and
turn boundaries, but not its streamed deltas.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatd import protocol as p

_NOT_FOR_WILDCARD = {p.CHAT_DELTA}


class Hub:
    def __init__(self) -> None:
        self._subs: dict[int, set[Any]] = {}
        self._wildcard: set[Any] = set()

    def subscribe(self, conv_id: int | None, conn: Any) -> None:
        if conv_id is None:
            self._wildcard.add(conn)
        else:
            self._subs.setdefault(conv_id, set()).add(conn)

    def unsubscribe(self, conv_id: int | None, conn: Any) -> None:
        if conv_id is None:
            self._wildcard.discard(conn)
            return
        subs = self._subs.get(conv_id)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[conv_id]

    def drop(self, conn: Any) -> None:
        """Forget a closed connection everywhere."""
        self._wildcard.discard(conn)
        for conv_id in [c for c, subs in self._subs.items() if conn in subs]:
            self.unsubscribe(conv_id, conn)

    def subscriber_count(self, conv_id: int) -> int:
        return len(self._subs.get(conv_id, ()))

    def publish(self, conv_id: int, method: str, params: Any, origin: Any = None) -> None:
        subs = self._subs.get(conv_id)
        wildcard = self._wildcard if method not in _NOT_FOR_WILDCARD and conv_id >= 0 else ()  # <0: stateless
        if not subs and not wildcard and origin is None:
            return
        body = p.encode({"jsonrpc": "2.0", "method": method, "params": params})
        delta = params if method == p.CHAT_DELTA else None  # a slow reader may merge these
        sent = set()
        for conn in (*(subs or ()), *wildcard):
            if conn not in sent:
                sent.add(conn)
                conn.send_body(body, delta)
        if origin is not None and origin not in sent:
            origin.send_body(body, delta)
        if method == p.CONVERSATION_CHANGED and params.kind == "deleted":
            self._subs.pop(conv_id, None)

    async def approve(self, conv_id: int, origin: Any, request: p.ToolApproveParams,
                      timeout: float) -> tuple[bool, str]:
        """Ask every attached client that answers approvals; the first answer wins and the others'
        requests are withdrawn. With nobody able to answer, or no answer in time, the call is denied."""
        asked = [c for c in dict.fromkeys((origin, *self._subs.get(conv_id, ())))
                 if c is not None and getattr(c, "approves", False) and not c.closing]
        if not asked:
            return False, "no client attached to the conversation can approve tools"
        pending: dict[asyncio.Future[Any], tuple[Any, Any]] = {}
        for conn in asked:
            try:
                msg_id, future = conn.request(p.TOOL_APPROVE, request)
            except ConnectionError:
                continue
            pending[future] = (conn, msg_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while pending:
                done, _ = await asyncio.wait(pending, timeout=max(deadline - loop.time(), 0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    return False, f"no answer within {timeout:g}s"
                for future in done:
                    conn, _ = pending.pop(future)
                    if future.cancelled() or future.exception() is not None:
                        continue  # this client could not answer; wait for the others
                    answer = future.result()
                    approved = bool(answer.get("approved")) if isinstance(answer, dict) else answer is True
                    return approved, f"{'approved' if approved else 'refused'} by {conn.name}"
            return False, "no client attached to the conversation could answer"
        finally:
            for future, (conn, msg_id) in pending.items():
                conn.withdraw_request(msg_id)

