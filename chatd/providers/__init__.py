"""Provider adapters: one module per wire format, all speaking the neutral events of `base.py`."""
