import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from client_fakes import FakeProviders  # noqa: E402


@pytest.fixture(scope="module")
def providers():
    """A fake OpenAI + Anthropic server for the module; tests script `.openai` / `.anthropic`."""
    fake = FakeProviders()
    yield fake
    fake.close()
