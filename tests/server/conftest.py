from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrion.server import Limits
from tests.server.helpers import (
    GATE,
    GATE_STARTED,
    LiveServer,
    chat_agent,
    gate_agent,
    start_server,
)

LIMITS = Limits(
    max_body_bytes=4096,
    max_message_chars=500,
    max_page_events=5,
    keepalive_seconds=0.05,
)


@pytest.fixture
def live(store_url: str) -> Iterator[LiveServer]:
    """The service on a loopback port with the `chat` and `gate` agents (default: chat),
    on each store backend (`store_url`, tests/conftest.py)."""
    GATE.clear()
    GATE_STARTED.clear()
    server = start_server(
        store_url, [chat_agent(), gate_agent()], limits=LIMITS, default_agent="chat"
    )
    try:
        yield server
    finally:
        server.stop()
