"""Standard faces onto the daemon: protocols other tools already speak, translated to chatd's own.

Each face is a *client* of the daemon (it speaks docs/protocol.md over the Unix socket through
`chatd_client.AsyncClient`), so a conversation is the same object whichever way it is reached and the
faces depend on no engine internals:

- `acp`: an Agent Client Protocol agent on stdio (`chatd acp`), for Zed, codecompanion.nvim, avante.nvim.
- `http`: an OpenAI-compatible HTTP/1.1 server (`chatd serve --http 127.0.0.1:PORT`), off by default.
"""
