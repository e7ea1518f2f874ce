"""The `chatd` command: serve, stdio, acp, call, status, stop; send, ls, show, export, import, rm.

Client subcommands import neither pygls nor httpx, so they start fast; only `serve` and
`stdio --standalone` load the engine. The commonest one-shots (`call METHOD [PARAMS]`, `send NAME [TEXT]`
with their flags) skip argparse and typing as well (`_quick_args`): about half of a ~50 ms `chatd call`
was imports and parser construction.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _parser() -> argparse.ArgumentParser:
    import argparse

    ap = argparse.ArgumentParser(prog="chatd", description="One local daemon for every LLM conversation.")
    ap.add_argument("--version", action="version", version=f"chatd {_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon on the user's socket (foreground)")
    serve.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--seed", type=int, help="seed for weighted model draws (tests)")
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="also serve the OpenAI-compatible HTTP face on this loopback address (off by default)")
    stdio = sub.add_parser("stdio", help="speak JSON-RPC on stdin/stdout through the user's daemon")
    stdio.add_argument("--standalone", action="store_true", help="run the engine in this process instead")
    stdio.add_argument("--no-start", action="store_true", help="do not start a daemon if none runs")
    acp = sub.add_parser("acp", help="an Agent Client Protocol agent on stdin/stdout, through the user's daemon")
    acp.add_argument("--tools", nargs="*", default=["*"], metavar="GLOB",
                     help="registry tools the model may call (default: all; none with no GLOB)")
    acp.add_argument("--model", action="append", dest="models", metavar="NAME",
                     help="models for new sessions (repeatable; default: the daemon's)")
    acp.add_argument("--no-start", action="store_true", help="do not start a daemon if none runs")
    call = sub.add_parser("call", help="send one request and print its result as JSON")
    call.add_argument("method")
    call.add_argument("params", nargs="?", help="params as a JSON object (default {})")
    call.add_argument("--follow", action="store_true", help="print notifications as they arrive (JSON lines)")
    call.add_argument("--no-start", action="store_true", help="do not start a daemon if none runs")
    sub.add_parser("status", help="show the daemon's status (does not start one)")
    sub.add_parser("stop", help="stop the daemon")
    from chatd_client.commands import add_parsers  # send, ls, show, export, import, rm (no engine imports)

    add_parsers(sub)
    return ap


def _version() -> str:
    from chatd import __version__

    return __version__


# the flags each quick form takes, and the attribute each sets (as `_parser()` declares them)
_QUICK_FLAGS = {"call": {"--no-start": "no_start", "--follow": "follow"},
                "send": {"--no-start": "no_start", "--json": "json"}}


def _quick_args(argv: list[str]) -> Any:
    """`argv` parsed as `_parser()` would, without argparse, when it is one of the common one-shot forms:
    `call METHOD [PARAMS]` or `send NAME [TEXT]`, positionals first, then the command's boolean flags and
    (send) `-m/--model NAME`. Anything else (help, other options, abbreviations, a value starting with
    `-`) returns None and goes to argparse. tests/terminal/test_cli_args.py checks both parse alike."""
    flags = _QUICK_FLAGS.get(argv[0]) if argv else None
    if flags is None:
        return None
    from types import SimpleNamespace

    command = argv[0]
    found: dict[str, Any] = dict.fromkeys(flags.values(), False)
    positional: list[str] = []
    models: list[str] = []
    options = False
    rest = iter(argv[1:])
    for arg in rest:
        if arg in flags:
            found[flags[arg]] = options = True
        elif command == "send" and arg in ("-m", "--model"):
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None
            models.append(value)
            options = True
        elif arg.startswith("-") or options or len(positional) == 2:
            return None  # an option argparse knows better, a positional after an option, a third one
        else:
            positional.append(arg)
    if not positional:
        return None
    second = positional[1] if len(positional) == 2 else None
    if command == "call":
        return SimpleNamespace(command=command, method=positional[0], params=second, **found)
    from chatd_client.commands import send_cmd

    return SimpleNamespace(command=command, name=positional[0], text=second, models=models or None, tools=None,
                           param=[], max_new_tokens=None, run=send_cmd, **found)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = _quick_args(argv) or _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "stdio":
        return _stdio(args)
    if args.command == "call":
        return _call(args)
    if args.command == "acp":
        return _acp(args)
    if args.command == "status":
        from types import SimpleNamespace

        return _call(SimpleNamespace(method="daemon/status", params=None, follow=False, no_start=True))
    if args.command == "stop":
        return _stop()
    if hasattr(args, "run"):  # a chatd_client.commands subcommand
        from chatd_client.commands import run

        return run(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from chatd.app import Daemon, setup_logging
    from chatd.paths import resolve
    from chatd.server.listener import AlreadyRunning

    paths = resolve()
    http = None
    if args.http:
        from chatd.faces.http import parse_address

        try:
            http = parse_address(args.http)
        except ValueError as exc:
            print(f"chatd: --http {args.http}: {exc}", file=sys.stderr)
            return 2
    setup_logging(paths, stderr=args.ready_fd is None and sys.stderr.isatty())
    try:
        daemon = Daemon(paths, seed=args.seed)
    except Exception as exc:
        print(f"chatd: cannot open the store at {paths.database}: {exc}", file=sys.stderr)
        return 1

    async def run() -> None:
        await daemon.serve_unix(ready_fd=args.ready_fd, http=http)

    try:
        asyncio.run(run())
    except AlreadyRunning as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{args.http} (--http)" if http is not None and getattr(exc, "http_face", False) else paths.socket
        print(f"chatd: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


def _stdio(args: argparse.Namespace) -> int:
    from chatd.paths import resolve

    paths = resolve()
    if args.standalone:
        import asyncio

        from chatd.app import Daemon, setup_logging

        setup_logging(paths, stderr=False)
        asyncio.run(Daemon(paths).serve_stdio())
        return 0
    from chatd_client.daemon import DaemonUnavailable, ensure_daemon
    from chatd_client.relay import main as relay_main

    try:
        sock = ensure_daemon(paths, autostart=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"chatd stdio: {exc}", file=sys.stderr)
        return 1
    return relay_main(sock)


def _acp(args: argparse.Namespace) -> int:
    import asyncio

    from chatd.faces.acp import serve
    from chatd_client.daemon import DaemonUnavailable, ensure_daemon

    try:
        sock = ensure_daemon(autostart=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"chatd acp: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(serve(sock, tools=args.tools, models=args.models))
    except (ConnectionError, OSError) as exc:
        print(f"chatd acp: lost the daemon: {exc}", file=sys.stderr)
        return 1


def _call(args: argparse.Namespace) -> int:
    from chatd import stdjson
    from chatd_client.connection import Client, RpcError
    from chatd_client.daemon import DaemonUnavailable, ensure_daemon

    try:
        params: Any = stdjson.loads(args.params) if args.params else {}
    except ValueError as exc:  # json.JSONDecodeError
        print(f"chatd call: params are not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        sock = ensure_daemon(autostart=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    with Client(sock) as client:
        if args.follow:
            client.on_notification = lambda m, p: print(stdjson.dumps({"method": m, "params": p}), flush=True)
        try:
            result = client.request(args.method, params)
        except RpcError as exc:
            print(stdjson.dumps_pretty({"error": {"code": exc.code, "message": exc.message, "data": exc.data}}))
            return 1
        except ConnectionError as exc:
            print(f"chatd: {exc}", file=sys.stderr)
            return 1
    print(stdjson.dumps_pretty(result))
    return 0


def _stop() -> int:
    from chatd_client.connection import Client, RpcError
    from chatd_client.daemon import DaemonUnavailable, ensure_daemon

    try:
        sock = ensure_daemon(autostart=False)
    except DaemonUnavailable:
        print("chatd: not running", file=sys.stderr)
        return 0
    with Client(sock) as client:
        try:
            client.request("daemon/shutdown", {})
            while True:  # the daemon closes the connection once it has stopped
                client.read_message()
        except (ConnectionError, RpcError, OSError):
            pass
    print("chatd: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
