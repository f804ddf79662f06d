"""The store conformance suite against the SQLite backend, on a real file per test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conformance import StoreConformance

from orchestrion.store import open_store
from orchestrion.store.base import Store
from orchestrion.store.migrations import SQLITE_MIGRATIONS


@pytest.fixture
def store_factory(tmp_path: Path) -> Callable[[], Store]:
    path = tmp_path / "store.db"
    return lambda: open_store(f"sqlite:///{path}")


@pytest.fixture
def expected_schema_version() -> int:
    return len(SQLITE_MIGRATIONS)


class TestSQLiteConformance(StoreConformance):
    pass
