"""The store: SQLite, the only writer of conversation data. See `sqlite.py`."""

from chatd.store.sqlite import Conversation, NewMessage, Store, TurnRecord

__all__ = ["Conversation", "NewMessage", "Store", "TurnRecord"]
