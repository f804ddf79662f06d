"""Stores for CLI tests: every test that involves a store runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.pg import any_store_url

BACKENDS = ["sqlite", "postgresql"]


def _store(backend: str, folder: Path) -> Iterator[str]:
    with any_store_url(backend, folder) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL where nothing exists yet (a missing file, an absent schema)."""
    yield from _store(request.param, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same, shared by the tests of one module (they must only read it)."""
    yield from _store(request.param, tmp_path_factory.mktemp("store"))
