"""Bench only: `chatd serve` with one suggested change patched in, to measure a fix before anyone makes it.

The change: replies produced while one read is being handled are written with one `transport.write`
instead of one each (a cork around `Connection.feed`). A profile of the daemon under 64 pipelined requests
spends most of its busy time in `_SelectorSocketTransport.write`, i.e. one `send` syscall per reply.
chatd's own code is not modified; this module wraps it at start-up.

    python -m bench.whatif_daemon serve --ready-fd FD      (same arguments as `chatd serve`)
"""

from __future__ import annotations

import sys

from chatd import protocol as p
from chatd.server import rpc


def install_write_coalescing() -> None:
    feed, write = rpc.Connection.feed, rpc.Connection.write

    def corked_feed(self: rpc.Connection, data: bytes) -> None:
        self._cork = []  # type: ignore[attr-defined]
        try:
            feed(self, data)
        finally:
            cork, self._cork = self._cork, None  # type: ignore[attr-defined]
            transport = self._transport
            if cork and transport is not None and not transport.is_closing():
                transport.write(b"".join(cork))

    def corked_write(self: rpc.Connection, body: bytes) -> None:
        cork = getattr(self, "_cork", None)
        if cork is None:
            write(self, body)
        else:
            cork.append(p.frame_line(body) if self.decoder.mode == "line" else p.frame_lsp(body))

    rpc.Connection.feed = corked_feed  # type: ignore[method-assign]
    rpc.Connection.write = corked_write  # type: ignore[method-assign]


if __name__ == "__main__":
    install_write_coalescing()
    from chatd.cli import main

    raise SystemExit(main(sys.argv[1:]))
