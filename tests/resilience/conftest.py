"""Both stores for the resilience layer's public API: a SQLite file and a PostgreSQL
schema (created up front, so processes that race to open it find it migrated)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrion.store import open_store
from orchestrion.store.base import Store
from tests.store.pg import fresh_schema
from tests.store.pg import store_url as pg_store_url


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleet.db'}"
        async with open_store(url):
            pass
        yield url
        return
    with fresh_schema("res") as schema:
        url = pg_store_url(schema)
        async with open_store(url):
            pass
        yield url


@pytest.fixture
async def any_store(store_url: str) -> AsyncIterator[Store]:
    store = open_store(store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
