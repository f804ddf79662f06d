from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """The service on a loopback port with the `chat` and `gate` agents (default: chat)."""
    GATE.clear()
    GATE_STARTED.clear()
    server = start_server(
        tmp_path / "service.db", [chat_agent(), gate_agent()], limits=LIMITS, default_agent="chat"
    )
    try:
        yield server
    finally:
        server.stop()
