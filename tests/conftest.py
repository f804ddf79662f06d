"""Shared fixtures: every test gets real store files in its own temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrion.store.sqlite import SQLiteStore
from tests.store.pg import fresh_schema
from tests.store.pg import store_url as postgres_url


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "orchestrion.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store of each backend: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with fresh_schema("t") as schema:
            yield postgres_url(schema)
