"""chatd: one local daemon that holds every LLM conversation, shared by every client."""

__version__ = "0.1.0"
