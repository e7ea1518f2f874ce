"""The ChatdError tree: every error the domain raises, each with its JSON-RPC code.

    ChatdError
    ├── NotFound            conversation or model missing         -32001 / -32003
    ├── AlreadyExists       name taken                            -32002
    ├── InvalidArgument     well-formed params with a bad value   -32602
    ├── TurnFailed          every attempt of a turn failed        -32004
    ├── LimitExceeded       a resource limit refused the request  -32005
    ├── ShuttingDown        the daemon is stopping                -32006
    └── StorageError        the store could not be written        -32007 (disk full, locked, read-only)

The message is the one line a user sees; it never carries a key or a prompt. The server layer maps
these to JSON-RPC errors once; nothing below it knows about JSON-RPC.
"""

from __future__ import annotations

from typing import Any

from chatd import protocol as p


class ChatdError(Exception):
    code = p.INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ConversationNotFound(ChatdError):
    code = p.CONVERSATION_NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"no conversation named {name!r}")


class ModelNotFound(ChatdError):
    code = p.MODEL_NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r} (see models/list)")


class AlreadyExists(ChatdError):
    code = p.CONVERSATION_EXISTS

    def __init__(self, name: str) -> None:
        super().__init__(f"a conversation named {name!r} already exists")


class InvalidArgument(ChatdError):
    code = p.INVALID_PARAMS


class TurnFailed(ChatdError):
    code = p.TURN_FAILED


class LimitExceeded(ChatdError):
    code = p.LIMIT_EXCEEDED


class ShuttingDown(ChatdError):
    code = p.SHUTTING_DOWN

    def __init__(self) -> None:
        super().__init__("chatd is shutting down")


class StorageError(ChatdError):
    code = p.STORAGE_ERROR
