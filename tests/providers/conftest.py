import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request):
    """Provider I/O tests run through both transports the daemon can use (config `http.transport`)."""
    return request.param
