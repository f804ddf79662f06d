"""SQLite-only: reads that can be large run beside the event loop, not on it.

The test of "not on the loop" is deterministic, not timed: a task that counts how often it
got to run while one read was awaited. A read executed on the loop (a synchronous sqlite3
call) lets nothing else run until it returns: the count stays 0.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from orchestrion.errors import StoreError
from orchestrion.store import SQLiteStore
from orchestrion.store.base import EventRecord, Lease, RunCompletion
from orchestrion.store.sqlite import INLINE_ROWS

TENANT = "acme"
TURNS = 40
MESSAGES_PER_TURN = 50
BIG = "x" * 2000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "reads.db") as store:
        yield store


def event(run_id: str, seq: int) -> EventRecord:
    return EventRecord(
        run_id=run_id,
        seq=seq,
        type="test.event",
        name=f"event {seq}",
        trace_id="t" * 32,
        span_id=f"{seq:016x}",
        parent_span_id=None,
        start=float(seq),
        attributes={"text": BIG},
    )


async def long_conversation(store: SQLiteStore) -> tuple[str, str, Lease]:
    """2,000 messages of 2 KB, and a running run with 500 events of 2 KB."""
    cid = "conv-long"
    await store.ensure_conversation(
        cid, tenant=TENANT, agent="a", ttl_seconds=1e9, state="AWAITING_INPUT"
    )
    for turn in range(TURNS + 1):
        run_id = f"run-{turn}"
        await store.create_run(
            run_id=run_id,
            conversation_id=cid,
            tenant=TENANT,
            agent="a",
            input={},
            trace_id="t" * 32,
            deadline_at=None,
            busy_policy="enqueue",
            event=event(run_id, 1),
        )
        lease = await store.claim(
            run_id, owner="w", expected_epoch=0, lease_seconds=60, now=time.time()
        )
        assert lease is not None
        if turn == TURNS:
            break
        messages = [{"role": "user", "content": BIG} for _ in range(MESSAGES_PER_TURN)]
        await store.complete_run(
            lease,
            RunCompletion("succeeded", {}, None, messages, "AWAITING_INPUT", []),
            now=time.time(),
        )
    for start in range(2, 502, 100):
        await store.append_events(lease, [event(run_id, s) for s in range(start, start + 100)])
    return cid, run_id, lease


async def loop_turns_during(read: Awaitable[Any]) -> tuple[Any, int]:
    """The read's result, and how many times another task ran while it was awaited."""
    turns = 0
    stop = False

    async def ticker() -> None:
        nonlocal turns
        while not stop:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is waiting for its next turn
    turns = 0
    try:
        result = await read
        seen = turns
    finally:
        stop = True
        await task
    return result, seen


async def test_large_reads_let_the_loop_run_and_small_ones_stay_on_it(
    store: SQLiteStore,
) -> None:
    cid, run_id, _ = await long_conversation(store)
    history, turns = await loop_turns_during(store.history(cid))
    assert len(history) == TURNS * MESSAGES_PER_TURN and turns > 0
    page, turns = await loop_turns_during(store.history_page(cid, limit=1000))
    assert [m.index for m in page] == list(range(1000, 2000)) and turns > 0
    events, turns = await loop_turns_during(store.read_events(run_id))
    assert len(events) == 501 and turns > 0
    grouped, turns = await loop_turns_during(store.read_events_of([run_id, "run-0"]))
    assert len(grouped[run_id]) == 501 and turns > 0
    runs, turns = await loop_turns_during(store.list_runs(limit=1000))
    assert len(runs) == TURNS + 1 and turns > 0
    # A stream's next few events: one query on the loop, no thread hop.
    tail, turns = await loop_turns_during(store.read_events(run_id, after_seq=490))
    assert [e.seq for e in tail] == list(range(491, 502)) and turns == 0
    few, turns = await loop_turns_during(store.read_events(run_id, limit=INLINE_ROWS))
    assert len(few) == INLINE_ROWS and turns == 0


async def test_the_reader_threads_see_every_write_at_once(store: SQLiteStore) -> None:
    _cid, run_id, lease = await long_conversation(store)
    for seq in range(502, 602):
        await store.append_events(lease, [event(run_id, seq)])
        # More than INLINE_ROWS events: read by a reader thread, on its own connection.
        events = await store.read_events(run_id, after_seq=seq - INLINE_ROWS - 5)
        assert events[-1].seq == seq


async def test_close_waits_for_reads_in_flight_and_refuses_later_ones(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closing.db")
    await store.open()
    cid, _, _ = await long_conversation(store)
    reads = [asyncio.create_task(store.history(cid)) for _ in range(4)]
    await asyncio.sleep(0)
    await store.close()
    for read in reads:
        assert len(await read) == TURNS * MESSAGES_PER_TURN
    with pytest.raises(StoreError, match="not open"):
        await store.history(cid)
    # The last connection closed checkpointed the WAL: no sidecar is left behind.
    assert sorted(os.listdir(tmp_path)) == ["closing.db"]
