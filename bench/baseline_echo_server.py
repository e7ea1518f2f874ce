"""The ping baseline: a raw asyncio + msgspec JSON-RPC echo server with LSP Content-Length framing.

It shares nothing with chatd (own framing parser, no pygls) so it measures what the transport itself costs:
every request is answered with its params as the result, every reply framed like chatd's.
Usage: python -m bench.baseline_echo_server SOCKET_PATH READY_FD
"""

from __future__ import annotations

import asyncio
import os
import sys

import msgspec

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        write = self.transport.write
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = int(bytes(buf[:end]).partition(b":")[2])
            if len(buf) < end + 4 + length:
                break
            msg = _decode(bytes(buf[end + 4:end + 4 + length]))
            del buf[:end + 4 + length]
            body = _encode({"jsonrpc": "2.0", "id": msg.get("id"), "result": msg.get("params")})
            write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # one write per reply, as chatd does


async def main(path: str, ready_fd: int) -> None:
    server = await asyncio.get_running_loop().create_unix_server(EchoProtocol, path)
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
