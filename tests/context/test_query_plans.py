"""The statements the store runs to load a turn's context, to claim runs and to purge,
asked for their plans: SQLite `EXPLAIN QUERY PLAN`, PostgreSQL `EXPLAIN` (with sequential
scans disabled, so a plan shows one only where no index can serve). None may scan a
table: each goes through an index. The statements are the real ones, recorded while the
store works on a store with data in it."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrion.context import keep_all, summarize, window
from orchestrion.context.load import load_context
from orchestrion.store import open_store
from orchestrion.store.base import QueueLimits, Store, SummaryRecord
from tests.context.support import chat_turns, seed_turns
from tests.store.conformance import event
from tests.store.pg import DSN, fresh_schema, store_url

WRITES_OR_READS = re.compile(r"^\s*(SELECT|WITH|UPDATE|DELETE|INSERT\s+INTO\s+\w+\s+SELECT)", re.I)


@contextmanager
def sqlite_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement any SQLite connection opened meanwhile executes (values bound)."""
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    yield seen


@contextmanager
def postgres_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    execute = psycopg.AsyncConnection.execute

    async def recorded(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        seen.append((str(query), params))
        return await execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", recorded)
    yield seen


def sqlite_scans(conn: sqlite3.Connection, statements: list[str]) -> list[str]:
    found = []
    for sql in statements:
        if not WRITES_OR_READS.match(sql):
            continue
        for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
            detail = str(row[3])
            table_scan = re.match(r"SCAN (\w+)(?: AS \w+)?$", detail)
            if table_scan and table_scan.group(1) not in ("purge_ids", "CONSTANT"):
                found.append(f"{detail}  <-  {' '.join(sql.split())[:160]}")
    return found


def postgres_scans(schema: str, statements: list[tuple[str, Any]]) -> list[str]:
    found = []
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("SET enable_seqscan = off")
        for sql, params in statements:
            if not WRITES_OR_READS.match(sql):
                continue
            plan = [r[0] for r in conn.execute(f"EXPLAIN {sql}", params).fetchall()]
            found += [
                f"{line.strip()}  <-  {' '.join(sql.split())[:160]}"
                for line in plan
                if "Seq Scan" in line
            ]
    return found


async def populate(store: Store) -> dict[str, Any]:
    """Conversations with history and finished runs, queued runs in other conversations
    (some behind a running one), a summary, and expired conversations."""
    for i in range(30):
        await seed_turns(store, f"c{i}", chat_turns(4, size=200), agent="support")
    queued = []
    for i in range(30, 45):
        cid = f"c{i}"
        await store.ensure_conversation(
            cid, tenant="default", agent="support", ttl_seconds=1e9, state="AWAITING_INPUT"
        )
        for n in range(2):
            run = await store.create_run(
                run_id=f"q{i}-{n}",
                conversation_id=cid,
                tenant="default",
                agent="support",
                input={"message": {"role": "user", "content": "hi"}},
                trace_id="0" * 32,
                deadline_at=None,
                busy_policy="enqueue",
                event=event(f"q{i}-{n}", 1),
            )
            queued.append(run)
    running = await store.claim(
        queued[0].id, owner="w", expected_epoch=0, lease_seconds=60, now=time.time()
    )
    assert running is not None
    await store.save_summary(
        running, SummaryRecord("c30", queued[0].id, "round 0", 0, 0, "s", "m", 1, 1, 1.0)
    )
    for i in range(3):
        await seed_turns(store, f"old{i}", chat_turns(2), agent="support")
    return {"queued": queued, "running": running}


async def exercise(store: Store, data: dict[str, Any]) -> dict[str, Callable[[], Awaitable[Any]]]:
    queued = data["queued"]
    run = await store.get_run(queued[2].id)
    limits = [QueueLimits("support", max_running=50, max_per_second=100.0)]

    async def context_load() -> None:
        for policy in (
            window(2_000, pinned=2, max_messages=30),
            summarize(2_000, pinned=1),
            keep_all(),
        ):
            await load_context(store, policy, run, message_count=8)

    async def claim() -> None:
        await store.next_claimable(agents=["support"], limits=limits)
        await store.queue_heads([r.id for r in queued[:6]])
        lease = await store.claim(
            queued[2].id,
            owner="w2",
            expected_epoch=0,
            lease_seconds=60,
            now=time.time(),
            limits=limits[0],
        )
        assert lease is not None

    async def purge() -> None:
        report = await store.purge_expired(now=time.time() + 2e9)
        assert report.conversations >= 3

    return {"context load": context_load, "claim": claim, "purge": purge}


@pytest.mark.parametrize("operation", ["context load", "claim", "purge"])
async def test_sqlite_plans_use_indexes(
    operation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_statements(monkeypatch) as seen:
        async with open_store(f"sqlite:///{tmp_path / 'plans.db'}") as store:
            data = await populate(store)
            operations = await exercise(store, data)
            seen.clear()
            await operations[operation]()
            statements = list(seen)
            assert any(WRITES_OR_READS.match(s) for s in statements)
            scans = sqlite_scans(store.conn, statements)  # type: ignore[attr-defined]
    assert scans == []


@pytest.mark.parametrize("operation", ["context load", "claim", "purge"])
async def test_postgres_plans_use_indexes(operation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with fresh_schema("plans") as schema:
        async with open_store(store_url(schema)) as store:
            data = await populate(store)
            operations = await exercise(store, data)
            with postgres_statements(monkeypatch) as seen:
                await operations[operation]()
            statements = list(seen)
            assert any(WRITES_OR_READS.match(s) for s, _ in statements)
            scans = postgres_scans(schema, statements)
        assert scans == []


async def test_the_plan_check_sees_a_scan(tmp_path: Path) -> None:
    """The checks above would fail on a scan (a statement no index can serve)."""
    unindexed = "SELECT * FROM messages WHERE body LIKE '%x%'"
    async with open_store(f"sqlite:///{tmp_path / 'plans.db'}") as store:
        scans = sqlite_scans(store.conn, [unindexed])  # type: ignore[attr-defined]
        assert scans and scans[0].startswith("SCAN messages")
    with fresh_schema("plans") as schema:
        async with open_store(store_url(schema)):
            scans = postgres_scans(schema, [(unindexed.replace("%", "%%"), None)])
        assert scans and scans[0].startswith("Seq Scan on messages")
