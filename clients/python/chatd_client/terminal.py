"""`chat`: the terminal chat. Streams replies from the user's daemon rendered as markdown, and shows the
turns other clients (editors, scripts) add to the same conversation as they happen, also while you type.

Commands at the prompt (history, clear, quit and exit also work without the slash):
  /history          the conversation so far
  /clear            drop its messages (the system prompt and settings stay)
  /list             conversations, most recently active first
  /switch NAME      open another conversation (created if new)
  /models           the models the daemon knows, and which have a key
  /model [NAME]     show or set this conversation's model
  /system [TEXT]    show or set the system prompt
  /fork [NAME]      copy this conversation and continue in the copy
  /retry            run the last turn again (after a reply: in a fork, so the original keeps it)
  /cost             tokens, context use and cost
  /quit             leave (also Ctrl-D)
Ctrl-C while a reply streams cancels it (nothing of that turn is saved); at the prompt it clears the line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import threading
from concurrent.futures import Future
from typing import Any, Callable

from chatd_client.connection import Client, RpcError
from chatd_client.daemon import DaemonUnavailable, ensure_daemon
from chatd_client.render import BOLD, Screen, sanitize

HELP = __doc__.split("\n\n", 1)[1].strip()
PROMPT = "You: "
_BARE = ("quit", "exit", "history", "clear")


class Link:
    """The daemon connection, shared by the prompt (main thread) and a reader thread.

    The reader takes every message off the socket: a reply completes its request's future, a notification
    goes to `on_notification` in arrival order. SIGINT is held back while a message is being written, so
    Ctrl-C never leaves half a frame on the socket.
    """

    def __init__(self, client: Client, on_notification: Callable[[str, Any], None],
                 on_closed: Callable[[], None]) -> None:
        self.client = client
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._writing = False
        self._interrupted = False
        self.on_closed = on_closed
        client.on_notification = on_notification
        threading.Thread(target=self._read, name="chatd-reader", daemon=True).start()

    def start(self, method: str, params: Any = None) -> tuple[int, Future]:
        future: Future = Future()
        with self._lock, self._shielded():
            msg_id = self.client.send_request(method, params)
            self._pending[msg_id] = future
        return msg_id, future

    def request(self, method: str, params: Any = None) -> Any:
        return self.result(self.start(method, params)[1])

    @staticmethod
    def result(future: Future) -> Any:
        msg = future.result()
        if "error" in msg:
            err = msg["error"] or {}
            raise RpcError(err.get("code", -32603), err.get("message", ""), err.get("data"))
        return msg.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        with self._shielded():
            self.client.notify(method, params)

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self._writing:
            self._interrupted = True
            return
        if _inside(frame, Screen.prompt_shown):
            # readline swallows an exception raised in its pre-input hook: signal again once the prompt
            # waits for keys (a user interface nicety, not synchronisation)
            threading.Thread(target=_signal_main_thread_later, daemon=True).start()
            return
        raise KeyboardInterrupt

    def _shielded(self) -> "_Shield":
        return _Shield(self)

    def _read(self) -> None:
        # SIGINT must reach the main thread: delivered here, it would not interrupt the prompt or the wait.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            while True:
                msg = self.client.read_message()
                if "method" in msg:
                    if "id" in msg:  # a request to us: this client offers no tools and answers no approvals
                        self.client._send({"jsonrpc": "2.0", "id": msg["id"],
                                           "error": {"code": -32601, "message": "not handled by chat"}})
                    continue
                with self._lock:
                    future = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
                if future is not None:
                    future.set_result(msg)
        except (ConnectionError, OSError) as exc:
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                future.set_exception(ConnectionError(f"lost the daemon: {exc}"))
            self.on_closed()


def _signal_main_thread_later() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    threading.Event().wait(0.05)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]


def _inside(frame: Any, function: Callable[..., Any]) -> bool:
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


class _Shield:
    def __init__(self, link: Link) -> None:
        self.link = link

    def __enter__(self) -> None:
        self.link._writing = True

    def __exit__(self, *exc: Any) -> None:
        self.link._writing = False
        if self.link._interrupted:
            self.link._interrupted = False
            raise KeyboardInterrupt


class TerminalChat:
    def __init__(self, client: Client, conversation: str, out: Any = sys.stdout,
                 interactive: bool | None = None, color: bool | None = None) -> None:
        tty = out.isatty() if hasattr(out, "isatty") else False
        self.interactive = (sys.stdin.isatty() and tty) if interactive is None else interactive
        color = (tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb") \
            if color is None else color
        self.screen = Screen(out, self.interactive, color, PROMPT)
        self.conversation = conversation
        self.link = Link(client, self._on_notification, self._on_closed)
        self._refs = itertools.count(1)
        self._ref: str | None = None  # clientRef of our turn in flight
        self._current: str | None = None  # the turn streaming now (ours or another client's)
        self._foreign: dict[str, Any] = {}
        self._expect: set[str] = set()  # conversation/changed kinds our own command causes
        self._last_failed: dict[str, Any] | None = None  # a turn of ours that stored nothing
        self.session = {"turns": 0, "input": 0, "output": 0, "cost": 0.0}

    # ------------------------------------------------------------ notifications (reader thread)
    def _on_notification(self, method: str, params: Any) -> None:
        if not isinstance(params, dict):
            return
        name = params.get("name") if method == "conversation/changed" else params.get("conversation")
        if name != self.conversation and not (method == "conversation/changed" and params.get("oldName")
                                              == self.conversation):
            return
        handler = _HANDLERS.get(method)
        if handler is not None:
            with self.screen.lock:
                handler(self, params)
                self.screen.flush()

    def _on_closed(self) -> None:
        self.screen.line("[the daemon closed the connection]")

    def _turn_started(self, params: dict[str, Any]) -> None:
        own = self._ref is not None and params.get("clientRef") == self._ref
        self._current = params["turnId"]
        if not own:
            self._foreign = {"turnId": params["turnId"]}
            self.screen.line(self.screen.style("── another client ──"))
            self.screen.line(f"{self.screen.style('User:', BOLD)} {sanitize(params['user']['text'])}")
        self.screen.live.start(self.screen.style(f"Assistant ({params['model']}):", BOLD) + " ")

    def _delta(self, params: dict[str, Any]) -> None:
        if params["turnId"] == self._current:
            if not self.screen.live.active:
                self.screen.live.start()
            self.screen.live.feed(params["text"])

    def _attempt(self, params: dict[str, Any]) -> None:
        self.screen.live.finish()
        then = {"retry": "retrying", "fallback": "trying the next model"}.get(params.get("next"), "giving up")
        self.screen.line(self.screen.style(f"[{params['model']} failed: {params.get('reason')}; {then}]"))
        if params.get("next") in ("retry", "fallback"):
            self.screen.live.start(self.screen.style("Assistant:", BOLD) + " ")

    def _tool_call(self, params: dict[str, Any]) -> None:
        self.screen.live.finish()
        args = json.dumps(params.get("arguments"), ensure_ascii=False)
        self.screen.line(self.screen.style(f"  ⚙ {params['tool']}({_clip(args, 200)})"))

    def _tool_result(self, params: dict[str, Any]) -> None:
        output = params.get("output")
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        decision = params.get("decision", "allow")
        note = "" if decision in ("allow", "approved") else f" ({decision})"
        self.screen.line(self.screen.style(f"  → {_clip(sanitize(text), 200)}{note}"))

    def _changed(self, params: dict[str, Any]) -> None:
        kind = params["kind"]
        if kind in self._expect:
            self._expect.discard(kind)
        elif kind == "turn" and self._foreign.get("turnId") in {m.get("turnId") for m in params["messages"]}:
            self._foreign.update(usage=params.get("usage") or {}, cost=params.get("cost") or 0.0,
                                 model=params["messages"][-1].get("model"))
        elif kind == "cleared":
            self.screen.line(self.screen.style("[another client cleared this conversation]"))
        elif kind == "deleted":
            self.screen.line(self.screen.style("[another client deleted this conversation; /switch NAME]"))
        elif kind == "renamed":
            self.conversation = params["name"]
            self.screen.line(self.screen.style(f"[renamed to '{params['name']}' by another client]"))
        elif kind == "updated":
            self.screen.line(self.screen.style("[another client changed this conversation's settings]"))

    def _turn_ended(self, params: dict[str, Any]) -> None:
        if params["turnId"] != self._current:
            return
        self.screen.live.finish()
        self._current = None
        if self._foreign.get("turnId") == params["turnId"]:
            if params["outcome"] == "committed" and "usage" in self._foreign:
                self.screen.line(self._footer(self._foreign.get("model"), self._foreign["usage"],
                                              self._foreign["cost"]))
            elif params["outcome"] != "committed":
                self.screen.line(self.screen.style(f"[the other client's turn {params['outcome']}]"))
            self._foreign = {}

    def _notice(self, params: dict[str, Any]) -> None:
        if "message" in params:  # chat/budgetWarning
            self.screen.line(self.screen.style(f"[budget: {params['message']}]"))
        else:  # chat/contextFitted
            self.screen.line(self.screen.style(
                f"[context: {params['action']} to fit {params['model']}'s window"
                f" ({params['tokensBefore']:,} → {params['tokensAfter']:,} tokens)]"))

    def _footer(self, model: str | None, usage: dict[str, Any], cost: float) -> str:
        tokens = f"{usage.get('inputTokens', 0):,} in / {usage.get('outputTokens', 0):,} out"
        return self.screen.style(f"  [{model}, {tokens} tokens{f', ${cost:.4f}' if cost else ''}]")

    # ------------------------------------------------------------ turns (main thread)
    def send(self, text: str | None = None, parts: list[Any] | None = None) -> None:
        self._ref = f"chat-{os.getpid()}-{next(self._refs)}"
        params: dict[str, Any] = {"conversation": self.conversation, "clientRef": self._ref,
                                  **({"parts": parts} if parts is not None else {"text": text})}
        try:
            msg_id, future = self.link.start("chat/send", params)
            result = self._await(msg_id, future)
        except RpcError as err:
            self._last_failed = params
            with self.screen.lock:
                self.screen.live.finish()
            if err.cancelled:
                self.screen.line("[cancelled: nothing was saved]")
            else:
                self.screen.line(f"Error: {err.message}  (/retry to try again)")
            return
        finally:
            self._ref = None
        self._last_failed = None
        usage = result["usage"]
        self.session["turns"] += 1
        self.session["input"] += usage.get("inputTokens", 0)
        self.session["output"] += usage.get("outputTokens", 0)
        self.session["cost"] += result["cost"] or 0.0
        self.screen.line(self._footer(result["modelUsed"], usage, result["cost"]))

    def _await(self, msg_id: int, future: Future) -> Any:
        """The turn's result; Ctrl-C meanwhile cancels the turn (its -32800 reply then ends the wait)."""
        cancelling = False
        while True:
            try:
                return self.link.result(future)
            except KeyboardInterrupt:
                if not cancelling:
                    cancelling = True
                    self.link.notify("$/cancelRequest", {"id": msg_id})

    # ------------------------------------------------------------ the prompt loop
    def banner(self) -> None:
        got = self.link.request("conversation/subscribe", {"name": self.conversation, "create": True})
        conv = got["conversation"]
        model = (conv["models"] or [None])[0] or conv["lastModel"] or "the default model"
        self.screen.line(f"chatd: conversation '{conv['name']}' ({conv['messageCount']} messages, {model})."
                         " /help for commands.")
        models = self.link.request("models/list", {})["models"]
        if not [m for m in models if m["keyPresent"] and m["name"] != "echo"]:
            self.screen.line("No API key found: replies come from the offline `echo` model. Set OPENAI_API_KEY,"
                             " ANTHROPIC_API_KEY or GEMINI_API_KEY (or configure a local server) to use a real"
                             " model.")
        for msg in got["messages"][-2:]:
            self.screen.line(self.screen.style(f"  {msg['role']}: {_clip(_summary(msg), 100)}"))
        active = got.get("activeTurn")
        if active:
            with self.screen.lock:
                self._turn_started({"turnId": active["turnId"], "user": active["user"], "model": active["model"]})
                self._delta({"turnId": active["turnId"], "text": active["text"]})

    def loop(self) -> int:
        self.banner()
        while True:
            try:
                line = self._input()
            except EOFError:
                self.screen.line("\nGoodbye!")
                return 0
            except KeyboardInterrupt:
                self.screen.line("\n(Ctrl-D or /quit to leave)" if self.interactive else "\nGoodbye!")
                if self.interactive:
                    continue
                return 0
            if not line:
                continue
            try:
                if line.startswith("/") or line.lower() in _BARE:
                    if not run_command(self, line):
                        self.screen.line("Goodbye!")
                        return 0
                else:
                    self.send(line)
            except RpcError as err:
                self.screen.line(f"Error: {err.message}")
            except KeyboardInterrupt:
                self.screen.line("[interrupted]")
            except ConnectionError as exc:
                self.screen.line(f"chat: {exc}")
                return 1

    def _input(self) -> str:
        try:
            return input(PROMPT).strip()
        finally:
            with self.screen.lock:
                self.screen.at_prompt = False


_HANDLERS: dict[str, Callable[[TerminalChat, dict[str, Any]], None]] = {
    "chat/turnStarted": TerminalChat._turn_started, "chat/delta": TerminalChat._delta,
    "chat/attempt": TerminalChat._attempt, "chat/toolCall": TerminalChat._tool_call,
    "chat/toolResult": TerminalChat._tool_result, "conversation/changed": TerminalChat._changed,
    "chat/turnEnded": TerminalChat._turn_ended, "chat/contextFitted": TerminalChat._notice,
    "chat/budgetWarning": TerminalChat._notice,
}


def _clip(text: str, n: int) -> str:
    text = text.replace("\n", " ")
    return text[:n] + "..." if len(text) > n else text


def _summary(msg: dict[str, Any]) -> str:
    """One message as one line of text: its text, else what its tool calls or results were."""
    if msg["text"]:
        return sanitize(msg["text"])
    bits = []
    for part in msg["parts"]:
        if part["type"] == "toolCall":
            bits.append(f"[tool call: {part['name']}({json.dumps(part.get('arguments', {}), ensure_ascii=False)})]")
        elif part["type"] == "toolResult":
            out = part.get("output")
            bits.append(f"[tool result: {out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)}]")
    return sanitize(" ".join(bits)) or "[No text]"


# ---------------------------------------------------------------- commands at the prompt
def run_command(chat: TerminalChat, line: str) -> bool:
    """Run one command line; False means quit."""
    word, _, arg = line.lstrip("/").partition(" ")
    word, arg = word.lower(), arg.strip()
    if word in ("quit", "exit", "q"):
        return False
    command = _COMMANDS.get(word)
    if command is None:
        chat.screen.line(f"Unknown command {line!r}. /help lists them.")
    else:
        command(chat, arg)
    return True


def _help(chat: TerminalChat, arg: str) -> None:
    chat.screen.line(HELP)


def _history(chat: TerminalChat, arg: str) -> None:
    got = chat.link.request("conversation/get", {"name": chat.conversation})
    chat.screen.line("\nConversation History:")
    if got["conversation"]["system"]:
        chat.screen.line(f"  system: {_clip(got['conversation']['system'], 80)}")
    for i, msg in enumerate(got["messages"], 1):
        chat.screen.line(f"  {i}. {msg['role']}: {_clip(_summary(msg), 80)}")
    chat.screen.line()


def _clear(chat: TerminalChat, arg: str) -> None:
    chat._expect.add("cleared")
    chat.link.request("conversation/clear", {"name": chat.conversation})
    chat.screen.line("History cleared!\n")


def _list(chat: TerminalChat, arg: str) -> None:
    for c in chat.link.request("conversation/list", {})["conversations"]:
        mark = "*" if c["name"] == chat.conversation else " "
        chat.screen.line(f" {mark} {c['name']:<24} {c['messageCount']:>5} messages  {c['lastModel'] or ''}")


def _switch(chat: TerminalChat, arg: str) -> None:
    if not arg:
        chat.screen.line("Usage: /switch NAME (/list shows them)")
        return
    chat.link.request("conversation/unsubscribe", {"name": chat.conversation})
    with chat.screen.lock:
        chat.conversation = arg
    chat.banner()


def _models(chat: TerminalChat, arg: str) -> None:
    for m in chat.link.request("models/list", {})["models"]:
        key = "key" if m["keyPresent"] else "no key"
        chat.screen.line(f"  {m['name']:<28} {m['provider']:<12} {key:<7} {m['contextWindow']:>9,} tokens")


def _model(chat: TerminalChat, arg: str) -> None:
    if arg:
        set_model(chat, arg)
        return
    conv = chat.link.request("conversation/get", {"name": chat.conversation, "afterSeq": 2**62})["conversation"]
    chat.screen.line(f"Models: {', '.join(conv['models']) or 'the daemon default'}; last used:"
                     f" {conv['lastModel'] or 'none yet'}. /model NAME changes it; /models lists them.")


def set_model(chat: TerminalChat, name: str) -> None:
    known = {m["name"] for m in chat.link.request("models/list", {})["models"]}
    if name not in known:
        chat.screen.line(f"No model named {name!r}; /models lists them.")
        return
    chat._expect.add("updated")
    chat.link.request("conversation/update", {"name": chat.conversation, "models": [name], "preferModel": name})
    chat.screen.line(f"Model set to {name}.")


def _system(chat: TerminalChat, arg: str) -> None:
    if arg:
        chat._expect.add("updated")
        chat.link.request("conversation/update", {"name": chat.conversation, "system": arg})
        chat.screen.line("System prompt set.")
        return
    conv = chat.link.request("conversation/get", {"name": chat.conversation, "afterSeq": 2**62})["conversation"]
    chat.screen.line(f"System prompt: {conv['system'] or '(none)'}")


def _free_name(chat: TerminalChat, base: str) -> str:
    taken = {c["name"] for c in chat.link.request("conversation/list", {"query": base, "limit": 10_000})[
        "conversations"]}
    return next(n for n in (base if i == 1 else f"{base}{i}" for i in itertools.count(1)) if n not in taken)


def _fork(chat: TerminalChat, arg: str, at_seq: int | None = None) -> None:
    name = arg or _free_name(chat, f"{chat.conversation}-fork")
    chat.link.request("conversation/fork", {"name": chat.conversation, "newName": name,
                                            **({"atSeq": at_seq} if at_seq is not None else {})})
    chat.screen.line(f"Forked '{chat.conversation}' as '{name}'; now in '{name}'.")
    _switch(chat, name)


def _retry(chat: TerminalChat, arg: str) -> None:
    if chat._last_failed is not None:  # nothing of it was stored: send it again here
        failed = chat._last_failed
        chat.send(failed.get("text"), failed.get("parts"))
        return
    messages = chat.link.request("conversation/get", {"name": chat.conversation})["messages"]
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last_user is None:
        chat.screen.line("Nothing to retry yet.")
        return
    # The daemon never rewrites stored history (other clients may be showing it), so the retry runs in
    # a fork that ends just before the last turn; the original keeps its reply.
    _fork(chat, _free_name(chat, f"{chat.conversation}-retry"), at_seq=last_user["seq"] - 1)
    chat.send(None, last_user["parts"])


def _cost(chat: TerminalChat, arg: str) -> None:
    got = chat.link.request("conversation/get", {"name": chat.conversation, "afterSeq": 2**62})
    ctx = got.get("context")
    if ctx:
        chat.screen.line(f"Context: {ctx['tokens']:,} of {ctx['contextWindow']:,} tokens ({ctx['fill']:.1%}) for"
                         f" {ctx['model']}; strategy {ctx['strategy']}")
        chat.screen.line(f"Stored turns: {ctx['turns']}, {ctx['inputTokens']:,} in / {ctx['outputTokens']:,} out"
                         f" tokens ({ctx['cachedTokens']:,} cached), ${ctx['cost']:.4f};"
                         f" over its life ${ctx['lifetimeCost']:.4f}")
    s = chat.session
    chat.screen.line(f"This session: {s['turns']} turns, {s['input']:,} in / {s['output']:,} out tokens,"
                     f" ${s['cost']:.4f}")


_COMMANDS: dict[str, Callable[[TerminalChat, str], None]] = {
    "help": _help, "?": _help, "history": _history, "clear": _clear, "list": _list, "ls": _list,
    "switch": _switch, "open": _switch, "models": _models, "model": _model, "system": _system, "fork": _fork,
    "retry": _retry, "cost": _cost, "usage": _cost, "context": _cost,
}


def _setup_readline(chat: TerminalChat) -> Callable[[], None]:
    """Input history (kept in the data directory) and the hook that tells the screen the prompt is up."""
    import readline

    from chatd.paths import resolve

    path = os.path.join(resolve().data_dir, "chat_history")
    try:
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)
    readline.set_pre_input_hook(chat.screen.prompt_shown)

    def save() -> None:
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            readline.write_history_file(path)
            os.chmod(path, 0o600)
        except OSError:
            pass

    return save


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chat", description="Chat with an LLM through the chatd daemon.",
                                 epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("conversation", nargs="?", default="chat", help="conversation name (default: chat)")
    ap.add_argument("-m", "--model", help="use this model for the conversation")
    ap.add_argument("-s", "--system", help="system prompt for a new conversation")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon if none runs")
    args = ap.parse_args(argv)
    try:
        sock = ensure_daemon(autostart=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 3
    with Client(sock) as client:
        chat = TerminalChat(client, args.conversation)
        try:
            chat.link.request("conversation/create", {"name": args.conversation,
                                                      **({"system": args.system} if args.system else {})})
        except RpcError as err:
            if err.code != -32002:  # exists already: continue it
                print(f"chat: {err.message}", file=sys.stderr)
                return 1
        if args.model:
            try:
                set_model(chat, args.model)
            except RpcError as err:
                print(f"chat: {err.message}", file=sys.stderr)
                return 1
        save = _setup_readline(chat) if chat.interactive else None
        signal.signal(signal.SIGINT, chat.link.on_sigint)
        try:
            return chat.loop()
        finally:
            if save is not None:
                save()


if __name__ == "__main__":
    sys.exit(main())
