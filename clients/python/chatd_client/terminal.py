"""`chat`: the terminal chat. Streams replies from the user's daemon; shares conversations with editors.

Commands at the prompt: /history, /clear, /model NAME, /models, /list, /switch NAME, /help, /quit
(and the bare words `history`, `clear`, `quit`, `exit` of the seed's chat loops). Ctrl-C while a reply
streams cancels that turn; Ctrl-C or Ctrl-D at the prompt quits.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chatd_client.connection import Client, RpcError
from chatd_client.daemon import DaemonUnavailable, ensure_daemon

HELP = __doc__.split("\n\n", 1)[1].strip()


class TerminalChat:
    def __init__(self, client: Client, conversation: str, out=sys.stdout) -> None:
        self.client = client
        self.conversation = conversation
        self.out = out
        self._turn: str | None = None
        client.on_notification = self._on_notification

    def _print(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def _on_notification(self, method: str, params: Any) -> None:
        if params is None or params.get("conversation", params.get("name")) != self.conversation:
            return
        if method == "chat/turnStarted" and self._turn is None:
            self._turn = params["turnId"]
            self._print(f"Assistant ({params['model']}): ", end="")
        elif method == "chat/delta" and params["turnId"] == self._turn:
            self._print(params["text"], end="")
        elif method == "chat/attempt":
            self._print(f"\n[{params['model']} failed: {params.get('reason')}; trying the next model]")

    def banner(self) -> None:
        models = self.client.request("models/list", {})["models"]
        usable = [m["name"] for m in models if m["keyPresent"] and m["name"] != "echo"]
        got = self.client.request("conversation/subscribe", {"name": self.conversation})
        conv = got["conversation"]
        self._print(f"chatd: conversation '{conv['name']}' ({conv['messageCount']} messages). /help for commands.")
        if not usable:
            self._print("No API key found: replies come from the offline `echo` model. Set OPENAI_API_KEY,"
                        " ANTHROPIC_API_KEY or GEMINI_API_KEY (or configure a local server) to use a real model.")

    def send(self, text: str) -> None:
        self._turn = None
        msg_id = self.client.send_request("chat/send", {"conversation": self.conversation, "text": text})
        try:
            result = self.client.wait(msg_id)
        except KeyboardInterrupt:
            self.client.notify("$/cancelRequest", {"id": msg_id})
            try:
                self.client.wait(msg_id)
            except RpcError:
                pass
            self._print("\n[cancelled: nothing was saved]\n")
            return
        except RpcError as err:
            self._print(f"\nError: {err.message}\n")
            return
        if self._turn is None:  # no stream seen (should not happen): show the reply whole
            self._print(f"Assistant ({result['modelUsed']}): {result['message']['text']}", end="")
        cost = f", ${result['cost']:.4f}" if result["cost"] else ""
        self._print(f"\n  [{result['modelUsed']}, {result['usage']['outputTokens']} tokens{cost}]\n")

    def command(self, line: str) -> bool:
        """Handle a command; False means quit."""
        word, _, arg = line.lstrip("/").partition(" ")
        word, arg = word.lower(), arg.strip()
        if word in ("quit", "exit", "q"):
            return False
        if word == "help":
            self._print(HELP)
        elif word == "history":
            got = self.client.request("conversation/get", {"name": self.conversation})
            self._print("\nConversation History:")
            if got["conversation"]["system"]:
                self._print(f"  system: {got['conversation']['system'][:80]}")
            for i, msg in enumerate(got["messages"], 1):
                text = msg["text"] or "[No text]"
                self._print(f"  {i}. {msg['role']}: {text[:80] + '...' if len(text) > 80 else text}")
            self._print()
        elif word == "clear":
            self.client.request("conversation/clear", {"name": self.conversation})
            self._print("History cleared!\n")
        elif word == "models":
            for m in self.client.request("models/list", {})["models"]:
                self._print(f"  {m['name']:<24} {m['provider']:<12} {'key' if m['keyPresent'] else 'no key'}")
        elif word == "model" and arg:
            self.client.request("conversation/update", {"name": self.conversation, "models": [arg],
                                                        "preferModel": arg})
            self._print(f"Model set to {arg}.")
        elif word == "list":
            for c in self.client.request("conversation/list", {})["conversations"]:
                self._print(f"  {c['name']:<24} {c['messageCount']:>5} messages  {c['lastModel'] or ''}")
        elif word == "switch" and arg:
            self.client.request("conversation/unsubscribe", {"name": self.conversation})
            self.conversation = arg
            self.banner()
        else:
            self._print(f"Unknown command {line!r}. /help lists them.")
        return True

    def loop(self) -> None:
        self.banner()
        while True:
            try:
                line = input("You: ").strip()
            except (EOFError, KeyboardInterrupt):
                self._print("\nGoodbye!")
                return
            if not line:
                continue
            bare = line.lower() in ("quit", "exit", "history", "clear")
            if line.startswith("/") or bare:
                try:
                    if not self.command(line):
                        self._print("Goodbye!")
                        return
                except RpcError as err:
                    self._print(f"Error: {err.message}")
                continue
            self.send(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chat", description="Chat with an LLM through the chatd daemon.")
    ap.add_argument("conversation", nargs="?", default="chat", help="conversation name (default: chat)")
    ap.add_argument("-m", "--model", help="use this model for the conversation")
    ap.add_argument("-s", "--system", help="system prompt for a new conversation")
    args = ap.parse_args(argv)
    try:
        sock = ensure_daemon()
    except DaemonUnavailable as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 1
    with Client(sock) as client:
        try:
            client.request("conversation/create", {"name": args.conversation,
                                                   **({"system": args.system} if args.system else {})})
        except RpcError as err:
            if err.code != -32002:  # exists already: continue it
                print(f"chat: {err.message}", file=sys.stderr)
                return 1
        chat = TerminalChat(client, args.conversation)
        if args.model:
            try:
                chat.command(f"/model {args.model}")
            except RpcError as err:
                print(f"chat: {err.message}", file=sys.stderr)
                return 1
        chat.loop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
