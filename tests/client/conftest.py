import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from client_fakes import FakeProviders  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def private_home(tmp_path_factory):
    """No client in these tests may find (or start) the user's own daemon."""
    saved = {k: os.environ.pop(k) for k in ("CHATD_HOME", "CHATD_SOCKET") if k in os.environ}
    os.environ["CHATD_HOME"] = str(tmp_path_factory.mktemp("nobody"))
    yield
    os.environ.pop("CHATD_HOME", None)
    os.environ.update(saved)


@pytest.fixture(scope="module")
def providers():
    """A fake OpenAI + Anthropic server for the module; tests script `.openai` / `.anthropic`."""
    fake = FakeProviders()
    yield fake
    fake.close()
