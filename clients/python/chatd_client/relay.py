"""`chatd stdio`: relay this process's stdin/stdout to the user's daemon socket, byte for byte.

Editors spawn this like a language server; the bytes are LSP-framed JSON-RPC and pass through untouched,
so every editor shares the one daemon. Ends when either side closes.
"""

from __future__ import annotations

import asyncio
import os
import sys


async def relay(socket_path: str) -> int:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(socket_path)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), os.fdopen(os.dup(0), "rb"))
    out_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(os.dup(1), "wb"))

    async def upstream() -> None:
        while data := await stdin.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def downstream() -> None:
        while data := await reader.read(65536):
            out_transport.write(data)

    up = asyncio.ensure_future(upstream())
    down = asyncio.ensure_future(downstream())
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        if up.done() and not down.done():
            await down  # the daemon answers what is in flight, then closes
    except (ConnectionError, BrokenPipeError):
        pass
    finally:
        up.cancel()
        down.cancel()
        writer.close()
        out_transport.close()
    return 0


def main(socket_path: str) -> int:
    try:
        return asyncio.run(relay(socket_path))
    except (ConnectionError, BrokenPipeError) as exc:
        print(f"chatd stdio: lost the daemon: {exc}", file=sys.stderr)
        return 1
