"""`chatd send | ls | show | export | import | rm`: the daemon from shell scripts.

Exit status: 0 done; 1 the daemon refused the request (no such conversation, name taken, bad params);
2 bad usage; 3 no daemon (none running with `--no-start`, or it could not be started or went away);
4 the turn failed (every model attempt failed: the provider is unreachable, refused or broke off);
5 a limit or budget refused the turn; 130 cancelled with Ctrl-C (nothing of the turn is stored).
Errors are one line on stderr; with `--json` the error object also goes to stdout.

`chatd export` writes the document described in docs/protocol.md ("The export format"); `chatd import`
reads it back, and export -> import -> export gives the same bytes.
"""

from __future__ import annotations

import _signal  # not `signal`: it imports `enum`, ~3 ms of a one-shot `chatd send`
import os
import sys
import time

from chatd import stdjson  # not `json`: it imports `re`, ~7 ms of a one-shot `chatd send`

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: argparse and typing would cost `chatd send` ~8 ms at start-up
    import argparse
    from typing import Any, Callable

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_TURN_FAILED, EXIT_LIMIT = 0, 1, 2, 3, 4, 5
EXIT_CANCELLED = 130
_EXIT_BY_CODE = {-32004: EXIT_TURN_FAILED, -32005: EXIT_LIMIT, -32800: EXIT_CANCELLED}


class Failed(Exception):
    def __init__(self, status: int, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error = status, message, error


def add_parsers(sub: Any) -> None:
    """The client subcommands, added to `chatd`'s parser; each sets `run` to its function here."""
    send = sub.add_parser("send", help="send one message and print the reply as it streams",
                          description="Send TEXT (or stdin) as the next turn of conversation NAME (created if"
                                      " new) and print the reply as it streams.")
    send.add_argument("name", help="conversation name")
    send.add_argument("text", nargs="?", help="the message (default: read stdin)")
    send.add_argument("-m", "--model", action="append", dest="models", metavar="NAME",
                      help="model(s) for this turn (repeatable; default: the conversation's)")
    send.add_argument("--tools", nargs="*", metavar="GLOB", help="registry tools the model may call")
    send.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                      help="a model option for this turn (VALUE is JSON if it parses, else a string)")
    send.add_argument("--max-new-tokens", type=int, metavar="N")
    send.set_defaults(run=send_cmd)
    ls = sub.add_parser("ls", help="list conversations, most recently active first")
    ls.add_argument("query", nargs="?", help="only names containing this")
    ls.set_defaults(run=ls_cmd)
    show = sub.add_parser("show", help="print a conversation as markdown (or JSON)")
    show.add_argument("name")
    show.set_defaults(run=show_cmd)
    export = sub.add_parser("export", help="write a conversation as an export document (JSON)")
    export.add_argument("name")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(run=export_cmd)
    imp = sub.add_parser("import", help="store a conversation from an export document")
    imp.add_argument("file", help="the document ('-' for stdin)")
    imp.add_argument("--name", help="import under this name instead of the document's")
    imp.set_defaults(run=import_cmd)
    rm = sub.add_parser("rm", help="delete conversations")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(run=rm_cmd)
    for parser in (send, ls, show, export, imp, rm):
        parser.add_argument("--no-start", action="store_true", help="do not start a daemon if none runs")
        if parser is not export:
            parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    """Run a client subcommand; the exit status as in this module's docstring."""
    from chatd_client.connection import Client, RpcError
    from chatd_client.daemon import DaemonUnavailable, ensure_daemon

    as_json = getattr(args, "json", False)
    try:
        try:
            sock = ensure_daemon(autostart=not args.no_start)
        except DaemonUnavailable as exc:
            raise Failed(EXIT_NO_DAEMON, str(exc)) from None
        try:
            with Client(sock) as client:
                return args.run(client, args)
        except RpcError as err:
            error = {"code": err.code, "message": err.message, "data": err.data}
            message = "cancelled; nothing of the turn was stored" if err.cancelled else err.message
            raise Failed(_EXIT_BY_CODE.get(err.code, EXIT_REFUSED), message, error) from None
        except (ConnectionError, OSError) as exc:
            raise Failed(EXIT_NO_DAEMON, f"lost the daemon: {exc}") from None
    except KeyboardInterrupt:
        print(f"chatd {args.command}: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except Failed as failure:
        if as_json:
            print(stdjson.dumps({"error": failure.error or {"message": failure.message}}))
        print(f"chatd {args.command}: {failure.message}", file=sys.stderr)
        return failure.status


def _emit_json(value: Any) -> None:
    print(stdjson.dumps_pretty(value))


# ---------------------------------------------------------------- send
def send_cmd(client: Any, args: argparse.Namespace) -> int:
    text = args.text if args.text is not None else sys.stdin.read().rstrip("\n")
    if not text.strip():
        raise Failed(EXIT_USAGE, "nothing to send (give TEXT or pipe it on stdin)")
    ref = f"send-{os.getpid()}-{time.monotonic_ns()}"
    params: dict[str, Any] = {"conversation": args.name, "text": text, "clientRef": ref}
    if args.models:
        params["models"] = args.models
    if args.tools is not None:
        params["tools"] = args.tools or ["*"]
    if args.param:
        params["params"] = dict(_param(p) for p in args.param)
    if args.max_new_tokens:
        params["maxNewTokens"] = args.max_new_tokens
    stream = _Stream(ref, sys.stdout, quiet=args.json)
    client.on_notification = stream.on_notification
    msg_id = client.send_request("chat/send", params)

    def cancel(signum: int, frame: Any) -> None:
        # Only reads are in progress while we wait, so the notification cannot split a frame; the wait
        # then ends with -32800 (unless the turn had just finished). A second Ctrl-C stops waiting.
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        client.notify("$/cancelRequest", {"id": msg_id})

    previous = _signal.signal(_signal.SIGINT, cancel)
    try:
        result = client.wait(msg_id)
    finally:
        _signal.signal(_signal.SIGINT, previous)
        stream.end()
    if args.json:
        _emit_json(result)
    return EXIT_OK


def _param(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise Failed(EXIT_USAGE, f"--param {item!r}: expected KEY=VALUE")
    try:
        return key, stdjson.loads(value)
    except ValueError:  # json.JSONDecodeError
        return key, value


class _Stream:
    """Prints this turn's deltas as they arrive (a retried attempt's partial text is void: said on stderr)."""

    def __init__(self, ref: str, out: Any, quiet: bool) -> None:
        self.ref, self.out, self.quiet = ref, out, quiet
        self.turn: str | None = None
        self.last = "\n"

    def on_notification(self, method: str, params: Any) -> None:
        if not isinstance(params, dict):
            return
        if method == "chat/turnStarted" and params.get("clientRef") == self.ref:
            self.turn = params["turnId"]
        elif params.get("turnId") != self.turn or self.turn is None:
            return
        elif method == "chat/delta" and not self.quiet:
            self.out.write(params["text"])
            self.out.flush()
            self.last = params["text"][-1:] or self.last
        elif method == "chat/attempt":
            then = {"retry": "retrying", "fallback": "trying the next model"}.get(params.get("next"), "giving up")
            void = "; the text above is void" if self.last != "\n" and not self.quiet else ""
            print(f"chatd send: {params['model']} failed ({params.get('reason')}); {then}{void}", file=sys.stderr)
            self.end()
        elif method == "chat/toolCall":
            print(f"chatd send: tool {params['tool']}({stdjson.dumps(params.get('arguments'))})", file=sys.stderr)

    def end(self) -> None:
        if self.last != "\n":
            self.out.write("\n")
            self.out.flush()
            self.last = "\n"


# ---------------------------------------------------------------- ls, show, rm
def ls_cmd(client: Any, args: argparse.Namespace) -> int:
    result = client.request("conversation/list", {"query": args.query, "limit": 100_000} if args.query
                            else {"limit": 100_000})
    if args.json:
        _emit_json(result)
        return EXIT_OK
    now = time.time()
    for c in result["conversations"]:
        print(f"{c['name']}\t{c['messageCount']} messages\t{c['lastModel'] or '-'}\t{_ago(now - c['updatedAt'])}")
    return EXIT_OK


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def show_cmd(client: Any, args: argparse.Namespace) -> int:
    got = client.request("conversation/get", {"name": args.name})
    if args.json:
        _emit_json(got)
        return EXIT_OK
    text = transcript(got)
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        from chatd_client.render import Markdown, sanitize

        text = Markdown().render(sanitize(text))
    sys.stdout.write(text)
    return EXIT_OK


def transcript(got: dict[str, Any]) -> str:
    """A conversation as markdown: a heading per message, tool calls and results as quoted lines."""
    import json

    conv = got["conversation"]
    out = [f"# {conv['name']}", ""]
    if conv["system"]:
        out += [f"> **System:** {conv['system']}", ""]
    for msg in got["messages"]:
        who = {"user": "User", "assistant": "Assistant", "tool": "Tool", "system": "System"}[msg["role"]]
        out.append(f"## {who}" + (f" ({msg['model']})" if msg.get("model") else ""))
        out.append("")
        for part in msg["parts"]:
            if part["type"] == "text":
                out += [part["text"].rstrip("\n"), ""]
            elif part["type"] == "toolCall":
                out += [f"> tool call `{part['name']}` {json.dumps(part.get('arguments', {}), ensure_ascii=False)}", ""]
            elif part["type"] == "toolResult":
                output = part.get("output")
                shown = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
                error = " (error)" if part.get("isError") else ""
                out += [f"> result of `{part['name']}`{error}: {shown}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def rm_cmd(client: Any, args: argparse.Namespace) -> int:
    for name in args.names:
        client.request("conversation/delete", {"name": name})
        if not args.json:
            print(f"deleted {name}")
    if args.json:
        _emit_json({"deleted": args.names})
    return EXIT_OK


# ---------------------------------------------------------------- export, import
def export_document(got: dict[str, Any]) -> bytes:
    """The export document for a `conversation/get` result, as bytes (see docs/protocol.md)."""
    import msgspec

    from chatd import protocol as p

    conv = got["conversation"]
    doc = {"format": p.EXPORT_FORMAT, "version": p.EXPORT_VERSION,
           "conversation": {k: conv[k] for k in ("name", "system", "models", "modelWeights", "preferModel",
                                                 "params", "lastModel", "lastSeq", "createdAt", "updatedAt")},
           "messages": [{k: m[k] for k in ("seq", "role", "parts", "model", "turnId", "createdAt")}
                        for m in got["messages"]]}
    typed = msgspec.convert(doc, p.ExportDocument)  # the same checks import applies, and a fixed field order
    return msgspec.json.format(msgspec.json.encode(typed), indent=2) + b"\n"


def export_cmd(client: Any, args: argparse.Namespace) -> int:
    data = export_document(client.request("conversation/get", {"name": args.name}))
    if args.output and args.output != "-":
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return EXIT_OK


def import_cmd(client: Any, args: argparse.Namespace) -> int:
    import json

    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as f:
                raw = f.read()
        document = json.loads(raw)
    except OSError as exc:
        raise Failed(EXIT_USAGE, f"cannot read {args.file}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Failed(EXIT_USAGE, f"{args.file} is not JSON: {exc}") from None
    params: dict[str, Any] = {"document": document}
    if args.name:
        params["name"] = args.name
    result = client.request("conversation/import", params)
    if args.json:
        _emit_json(result)
    else:
        conv = result["conversation"]
        print(f"imported {conv['name']} ({conv['messageCount']} messages)")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "send": send_cmd, "ls": ls_cmd, "show": show_cmd, "export": export_cmd, "import": import_cmd, "rm": rm_cmd,
}
