"""The shared HTTP client (`config.make_http_client`) cleans up after a script that never closes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A throwaway script: one request to a raw asyncio server on 127.0.0.1, then the loop ends with the
# client still open. `{how}` picks how the client is dropped.
SCRIPT = textwrap.dedent('''
    import asyncio, gc, sys
    import httpx
    from chatd.config import HttpSettings, make_http_client

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nContent-Type: application/json\\r\\n\\r\\n{{}}")
            await writer.drain()
            await reader.read()  # until the client closes its connection (or the loop ends)
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        http = make_http_client(HttpSettings())
        response = await http.get(f"http://127.0.0.1:{{port}}/")
        print(response.status_code, type(http._transport).__name__)
        {plain}
        {how}
        server.close()

    asyncio.run(main())
''')

# a plain aiohttp session, used once and left open as the script leaves the client
PLAIN = ("import aiohttp; session = aiohttp.ClientSession(); "
         "(await session.get(f'http://127.0.0.1:{port}/')).release()")


def _run(how: str, plain: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT.format(how=how, plain=plain)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("how", ["pass", "del http; gc.collect(); await asyncio.sleep(0); await asyncio.sleep(0)",
                                 "await http.aclose()"],
                         ids=["left-open", "dropped-while-running", "closed"])
def test_a_script_that_never_closes_the_client_prints_no_aiohttp_warning(how):
    done = _run(how)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "AiohttpTransport"]
    assert "Unclosed" not in done.stderr and "unclosed transport" not in done.stderr, done.stderr


def test_a_plain_aiohttp_session_left_open_does_warn():
    """The check above can fail: a plain aiohttp session, left open, makes aiohttp complain."""
    done = _run("pass", plain=PLAIN)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "AiohttpTransport"]
    assert "Unclosed client session" in done.stderr
