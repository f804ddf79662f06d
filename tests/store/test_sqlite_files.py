"""SQLite-only: what the store does with files that are not (yet, or any more) its own.

A file the store refuses must be left exactly as it was: same bytes, same mtime, and no
-wal/-shm sidecar files left next to it.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from orchestrion.errors import NotAnOrchestrionStore, SchemaTooNew, StoreError
from orchestrion.store import SQLiteStore, open_store
from orchestrion.store.migrations import SQLITE_APPLICATION_ID, SQLITE_MIGRATIONS

PAST_NS = 1_600_000_000_000_000_000  # an mtime in 2020, so any write would show


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def age(path: Path) -> None:
    os.utime(path, ns=(PAST_NS, PAST_NS))


def sqlite_file(path: Path, *statements: str, wal: bool = False) -> Path:
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    age(path)
    return path


def garbage(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


async def assert_refused(
    path: Path, error: type[StoreError], match: str | None = None
) -> StoreError:
    before = snapshot(path)
    store = SQLiteStore(path)
    with pytest.raises(error, match=match) as raised:
        await store.open()
    assert str(path) in str(raised.value)
    assert snapshot(path) == before, "the refused file (or its folder) was changed"
    # A refused store is not half-open.
    with pytest.raises(StoreError):
        store.conn  # noqa: B018
    # Trying again gives the same answer and still changes nothing.
    with pytest.raises(error):
        await SQLiteStore(path).open()
    assert snapshot(path) == before
    return raised.value


# ---- files that are not ours -------------------------------------------------------------


async def test_a_text_file_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 50)
    age(path)
    await assert_refused(path, NotAnOrchestrionStore, "not a SQLite database")


@pytest.mark.parametrize("size", [1, 99, 100, 4096, 50_000])
async def test_random_bytes_are_not_a_store(tmp_path: Path, size: int) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(b"\x01" + garbage(size - 1, seed=size))
    age(path)
    await assert_refused(path, NotAnOrchestrionStore)


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
async def test_another_applications_database_is_refused(tmp_path: Path, wal: bool) -> None:
    path = sqlite_file(
        tmp_path / "app.db",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
        "INSERT INTO customers (name) VALUES ('Ada'), ('Grace')",
        wal=wal,
    )
    await assert_refused(path, NotAnOrchestrionStore, "another application")
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 2
    finally:
        conn.close()


async def test_a_database_with_another_application_id_is_refused(tmp_path: Path) -> None:
    # Even with no tables yet: the application id says it belongs to someone else.
    path = sqlite_file(tmp_path / "other.db", "PRAGMA application_id = 1234")
    await assert_refused(path, NotAnOrchestrionStore, "1234")


async def test_another_applications_database_with_a_live_wal_is_untouched(
    tmp_path: Path,
) -> None:
    # The other application is running: its latest writes are still in its -wal file.
    path = tmp_path / "busy.db"
    owner = sqlite3.connect(path)
    try:
        owner.execute("PRAGMA journal_mode = WAL")
        owner.execute("PRAGMA wal_autocheckpoint = 0")
        owner.execute("CREATE TABLE t (x)")
        owner.execute("INSERT INTO t VALUES (1)")
        owner.commit()
        wal = Path(f"{path}-wal")
        wal_before = snapshot(wal)[0]
        await assert_refused(path, NotAnOrchestrionStore)
        assert snapshot(wal)[0] == wal_before
        assert owner.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        owner.close()


async def test_a_store_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    newer = len(SQLITE_MIGRATIONS) + 1
    path = sqlite_file(
        tmp_path / "future.db",
        f"PRAGMA application_id = {SQLITE_APPLICATION_ID}",
        f"PRAGMA user_version = {newer}",
        "CREATE TABLE conversations (id TEXT PRIMARY KEY, shiny_new_column TEXT)",
    )
    await assert_refused(path, SchemaTooNew, f"version {newer}")


async def test_a_newer_store_in_wal_mode_is_refused(tmp_path: Path) -> None:
    path = sqlite_file(
        tmp_path / "future-wal.db",
        f"PRAGMA application_id = {SQLITE_APPLICATION_ID}",
        "PRAGMA user_version = 99",
        "CREATE TABLE t (x)",
        wal=True,
    )
    await assert_refused(path, SchemaTooNew)


# ---- corrupt files -----------------------------------------------------------------------


def header_then_garbage(source: Path, target: Path, keep: int, seed: int) -> Path:
    """A copy of `source` whose bytes after the first `keep` are random."""
    data = source.read_bytes()
    target.write_bytes(data[:keep] + garbage(len(data) - keep, seed))
    age(target)
    return target


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
async def test_a_foreign_database_with_garbage_pages_is_refused(tmp_path: Path, wal: bool) -> None:
    source = sqlite_file(
        tmp_path / "source.db", "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)", wal=wal
    )
    path = header_then_garbage(source, tmp_path / "corrupt.db", keep=100, seed=1)
    await assert_refused(path, StoreError)


async def test_an_orchestrion_store_with_a_garbage_schema_page_is_refused(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source.db"
    async with SQLiteStore(source) as store:
        await store.ensure_conversation("c", tenant="t", agent="a", ttl_seconds=1, state="S")
    # Valid header (our application id, WAL mode, version 1) and garbage pages.
    path = header_then_garbage(source, tmp_path / "corrupt.db", keep=100, seed=2)
    error = await assert_refused(path, StoreError)
    assert "corrupt" in str(error)


async def test_an_orchestrion_store_with_garbage_data_pages_is_not_written(
    tmp_path: Path,
) -> None:
    # Page 1 (header and schema) is intact; the pages holding tables and indexes are not.
    # SQLite cannot know without reading them, so the store may open; but opening must
    # not write to a file it has not checked, and reading the garbage gives a StoreError
    # that names the file, never a raw sqlite3 error.
    source = tmp_path / "source.db"
    async with SQLiteStore(source) as store:
        await store.ensure_conversation("c", tenant="t", agent="a", ttl_seconds=1, state="S")
    page_size = 4096
    assert source.stat().st_size > 2 * page_size
    path = header_then_garbage(source, tmp_path / "corrupt.db", keep=page_size, seed=3)
    before = path.read_bytes(), path.stat().st_mtime_ns
    store = SQLiteStore(path)
    try:
        await store.open()
        await store.get_conversation("c")
    except StoreError as exc:
        assert str(path) in str(exc)
    else:
        pytest.fail("reading a corrupt store succeeded")
    finally:
        await store.close()
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


# ---- files that become stores ------------------------------------------------------------


def pragma(store: SQLiteStore, name: str) -> object:
    return store.conn.execute(f"PRAGMA {name}").fetchone()[0]


async def test_a_fresh_file_gets_wal_our_application_id_and_the_latest_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh.db"
    async with SQLiteStore(path) as store:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "application_id") == SQLITE_APPLICATION_ID
        assert pragma(store, "user_version") == len(SQLITE_MIGRATIONS)
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)
    # The marks are in the file itself, for any other reader.
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == SQLITE_APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE_MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"conversations", "messages", "runs", "steps", "events", "effects", "breakers"} <= (
        tables
    )


@pytest.mark.parametrize(("durability", "level"), [("full", 2), ("normal", 1)])
async def test_durability_sets_synchronous(tmp_path: Path, durability: str, level: int) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'd.db'}", durability=durability) as store:  # type: ignore[arg-type]
        assert isinstance(store, SQLiteStore)
        assert pragma(store, "synchronous") == level


async def test_the_default_durability_is_normal(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "d.db") as store:
        assert pragma(store, "synchronous") == 1


def test_an_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        SQLiteStore(tmp_path / "d.db", durability="sometimes")  # type: ignore[arg-type]


async def test_an_empty_existing_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)
        assert pragma(store, "application_id") == SQLITE_APPLICATION_ID
        await store.ensure_conversation("c", tenant="t", agent="a", ttl_seconds=1, state="S")
    async with SQLiteStore(path) as store:
        assert (await store.get_conversation("c")).tenant == "t"


async def test_an_empty_sqlite_database_is_adopted(tmp_path: Path) -> None:
    # A valid SQLite file with no tables and no application id (e.g. `sqlite3 x.db VACUUM`).
    path = sqlite_file(tmp_path / "blank.db", "PRAGMA user_version = 0")
    conn = sqlite3.connect(path)
    conn.execute("VACUUM")
    conn.close()
    assert path.stat().st_size > 0
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)


async def test_reopening_keeps_the_version_and_data(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    async with SQLiteStore(path) as store:
        await store.ensure_conversation("c", tenant="t", agent="a", ttl_seconds=1, state="S")
    for _ in range(2):
        async with SQLiteStore(path) as store:
            assert await store.schema_version() == len(SQLITE_MIGRATIONS)
            assert (await store.get_conversation("c")).agent == "a"


async def test_a_missing_folder_is_a_clear_store_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "folder" / "store.db"
    with pytest.raises(StoreError, match="does not exist") as raised:
        await SQLiteStore(path).open()
    assert str(path.parent) in str(raised.value)
    assert not (tmp_path / "no").exists()


async def test_a_folder_in_place_of_the_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.mkdir()
    with pytest.raises(StoreError) as raised:
        await SQLiteStore(path).open()
    assert str(path) in str(raised.value)
    assert os.listdir(path) == []


async def test_using_a_closed_store_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(StoreError, match="not open"):
        await store.get_conversation("c")


def test_store_urls(tmp_path: Path) -> None:
    absolute = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(absolute, SQLiteStore) and absolute.path == tmp_path / "a.db"
    bare = open_store(str(tmp_path / "b.db"))
    assert isinstance(bare, SQLiteStore) and bare.path == tmp_path / "b.db"
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://localhost/db")
