import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers import new_daemon  # noqa: E402

# The soak run takes minutes: it is collected only when asked for (CHATD_SOAK_SECONDS=600 scripts/test tests/soak).
collect_ignore = [] if os.environ.get("CHATD_SOAK_SECONDS") else ["soak"]


@pytest.fixture
def daemon(tmp_path):
    """A running `chatd serve` subprocess with its own CHATD_HOME."""
    d = new_daemon(tmp_path).start()
    yield d
    d.stop()
