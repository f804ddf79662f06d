"""The store conformance suite against the PostgreSQL backend, each test in its own schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from conformance import StoreConformance
from pg import fresh_schema, store_url

from orchestrion.store import open_store
from orchestrion.store.base import Store
from orchestrion.store.migrations import POSTGRES_MIGRATIONS


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema("conf") as name:
        yield name


@pytest.fixture
def store_factory(schema: str) -> Callable[[], Store]:
    return lambda: open_store(store_url(schema))


@pytest.fixture
def expected_schema_version() -> int:
    return len(POSTGRES_MIGRATIONS)


class TestPostgresConformance(StoreConformance):
    pass
