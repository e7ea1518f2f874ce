import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from ag_fakes import FakeServer  # noqa: E402


@pytest.fixture
def fake():
    """A fake provider server on 127.0.0.1 (one per test, so a stalled reply never outlives its test)."""
    with FakeServer() as server:
        yield server
