"""`Message` and `Conversation`: the transcript a script builds and keeps, in the seed library's shapes.

A message is a role and a list of parts (the wire's own `TextPart`, `ToolCallPart`, `ToolResultPart`,
`ThinkingPart` Structs, re-exported as `Text`, `ToolCall`, `ToolResult`, `Thinking`). A conversation is a
list of messages plus `model_used` (the model of the last recorded response, for `prefer_model="last"`).

A conversation is *local* (the script holds the history; nothing is stored under the user's names) or
*bound* to a daemon-side named conversation (`Conversation.load("notes")`, or `Conversation(name=...)`),
which editors and the terminal share: then the daemon's history is the truth, and `LLMClient` mirrors
it into `.messages` before each call.

`system`, `user` and `ai` work on the class (a new conversation) and on an instance (append, return it),
so both `Conversation.system("...")` and `Conversation().system("...")` read as in the seed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import msgspec

from chatd import protocol as p

Text = p.TextPart
ToolCall = p.ToolCallPart
ToolResult = p.ToolResultPart
Thinking = p.ThinkingPart

_ROLES = ("system", "user", "assistant", "tool")


class Message:
    """One message: `role` ("system", "user", "assistant" or "tool") and `parts`."""

    __slots__ = ("role", "parts", "model", "seq")

    def __init__(self, role: str, parts: Iterable[Any] | str = (), *, model: str | None = None,
                 seq: int | None = None) -> None:
        if role == "ai":
            role = "assistant"
        if role not in _ROLES:
            raise ValueError(f"role must be one of {', '.join(_ROLES)}, not {role!r}")
        self.role = role
        self.parts: list[Any] = [Text(parts)] if isinstance(parts, str) else list(parts)
        self.model = model  # the model that wrote it (assistant messages from the daemon)
        self.seq = seq  # its sequence number in a daemon-side conversation, if it came from one

    @classmethod
    def user(cls, text: str) -> "Message":
        return cls("user", text)

    @classmethod
    def ai(cls, text: str) -> "Message":
        return cls("assistant", text)

    assistant = ai

    @classmethod
    def system(cls, text: str) -> "Message":
        return cls("system", text)

    @property
    def completion(self) -> str | None:
        """The message's text (its text parts joined), or None when it has none (a tool call or result)."""
        text = "".join(x.text for x in self.parts if type(x) is Text)
        return text or None

    text = completion

    @property
    def tool_calls(self) -> list[Any]:
        return [x for x in self.parts if type(x) is ToolCall]

    @property
    def tool_results(self) -> list[Any]:
        return [x for x in self.parts if type(x) is ToolResult]

    @classmethod
    def from_wire(cls, msg: dict[str, Any] | p.MessageOut) -> "Message":
        """A message as the daemon sends it (`conversation/get`, `chat/send`'s `message`)."""
        if not isinstance(msg, p.MessageOut):
            msg = msgspec.convert(msg, p.MessageOut)
        return cls(msg.role, msg.parts, model=msg.model, seq=msg.seq)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and other.role == self.role and other.parts == self.parts

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        text = self.completion or ", ".join(type(x).__name__ for x in self.parts)
        return f"Message({self.role!r}, {text[:60]!r})"


class _Hybrid:
    """A method that builds a new Conversation on the class and appends to the conversation on an instance."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __get__(self, obj: "Conversation | None", cls: type["Conversation"]) -> Callable[[str], "Conversation"]:
        role = self.role

        def add(text: str) -> "Conversation":
            conv = cls() if obj is None else obj
            return conv.add(Message(role, text))

        add.__doc__ = f"Append a {role} message (on the class: a new conversation starting with it)."
        return add


class Conversation:
    """The history of one chat. `messages` is a plain list (the seed's loops `pop()` from it)."""

    system = _Hybrid("system")
    user = _Hybrid("user")
    ai = _Hybrid("assistant")

    def __init__(self, messages: Iterable[Message] | None = None, *, name: str | None = None) -> None:
        self.messages: list[Message] = list(messages or ())
        self.model_used: str | None = None
        self.name = name  # a daemon-side conversation this one is bound to, or None: local
        if name is not None and not p.valid_name(name):
            raise ValueError(f"invalid conversation name {name!r}")

    def add(self, message: Message) -> "Conversation":
        self.messages.append(message)
        return self

    def with_response(self, response: Any) -> "Conversation":
        """Append a response's message and record its model (what `prefer_model="last"` sticks to)."""
        content = getattr(response, "content", None)
        if content is None and getattr(response, "completion", None):
            content = Message.ai(response.completion)
        if content is not None:
            self.messages.append(content)
        if getattr(response, "model_internal", None):
            self.model_used = response.model_internal
        return self

    @property
    def system_prompt(self) -> str | None:
        texts = [m.completion or "" for m in self.messages if m.role == "system"]
        return "\n\n".join(texts) if texts else None

    @classmethod
    def load(cls, name: str, *, socket: str | None = None) -> "Conversation":
        """The daemon-side conversation `name` (its history now; created at the first send if new)."""
        from chatd_client.connection import Client, RpcError
        from chatd_client.daemon import ensure_daemon

        conv = cls(name=name)
        with Client(socket or ensure_daemon()) as c:
            try:
                got = c.request(p.CONVERSATION_GET, {"name": name})
            except RpcError as err:
                if err.code != p.CONVERSATION_NOT_FOUND:
                    raise
                return conv
        conv.mirror(got)
        return conv

    def mirror(self, got: dict[str, Any]) -> None:
        """Replace the history with a `conversation/get` result (a bound conversation's truth)."""
        info = got["conversation"]
        messages = [Message.system(info["system"])] if info.get("system") else []
        messages += [Message.from_wire(m) for m in got["messages"]]
        self.messages = messages
        self.model_used = info.get("lastModel") or self.model_used

    def copy(self) -> "Conversation":
        conv = Conversation(self.messages, name=self.name)
        conv.model_used = self.model_used
        return conv

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        where = f"name={self.name!r}, " if self.name else ""
        return f"Conversation({where}{len(self.messages)} messages, model_used={self.model_used!r})"
