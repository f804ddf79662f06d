"""`open_store(url, create=False)`: a reader that finds no store raises NoStore and leaves
no trace (no file, no schema); an existing store opens as usual. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import any_store_url, sql

from orchestrion.errors import NoStore, StoreError
from orchestrion.store import open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with any_store_url(request.param, tmp_path) as found:
        yield found


def _exists(url: str) -> bool:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).exists()
    schema = url.rpartition("schema=")[2]
    return bool(sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)))


async def test_no_store_is_created_by_a_reader(url: str) -> None:
    with pytest.raises(NoStore) as raised:
        await open_store(url, create=False).open()
    assert "no store" in str(raised.value)
    assert not _exists(url)
    async with open_store(url) as writer:  # the default creates it
        await writer.ensure_conversation(
            "c1", tenant="t", agent="a", ttl_seconds=60, state="AWAITING_INPUT"
        )
    async with open_store(url, create=False) as reader:
        assert (await reader.get_conversation("c1")).agent == "a"


async def test_an_empty_sqlite_file_is_no_store_for_a_reader(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(NoStore):
        await open_store(f"sqlite:///{empty}", create=False).open()
    assert empty.read_bytes() == b""


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("sqlite:x.db", "sqlite:///x.db"),
        ("sqlite://x.db", "sqlite:///x.db"),
        ("sqlite:/abs/x.db", "sqlite:////abs/x.db"),
    ],
)
def test_a_misspelled_sqlite_url_is_refused(url: str, suggestion: str) -> None:
    with pytest.raises(StoreError, match=f"did you mean {suggestion}"):
        open_store(url)


def test_a_scheme_like_bare_path_is_refused() -> None:
    with pytest.raises(StoreError, match="unknown store URL 'postgres:app'"):
        open_store("postgres:app")
