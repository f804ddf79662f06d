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
from tests.store.pg import fresh_schema
from tests.store.pg import store_url as postgres_url

LIMITS = Limits(
    max_body_bytes=4096,
    max_message_chars=500,
    max_page_events=5,
    keepalive_seconds=0.05,
)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each backend: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
    else:
        with fresh_schema("srv") as schema:
            yield postgres_url(schema)


@pytest.fixture
def live(store_url: str) -> Iterator[LiveServer]:
    """The service on a loopback port with the `chat` and `gate` agents (default: chat),
    on each store backend."""
    GATE.clear()
    GATE_STARTED.clear()
    server = start_server(
        store_url, [chat_agent(), gate_agent()], limits=LIMITS, default_agent="chat"
    )
    try:
        yield server
    finally:
        server.stop()
