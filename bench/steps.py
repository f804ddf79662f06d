"""Microseconds per durable step, next to a raw SQLite WAL commit in the same process.

A durable step here is what the engine does for every journaled step: consult the
journal, run the (no-op) function, and commit the step record with its span event and
the lease renewal in one fenced transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrion.engine.journal import Journal, StepInfo
from orchestrion.observe.events import RunEmitter, new_trace_id, run_span_id
from orchestrion.store.base import EventRecord
from orchestrion.store.sqlite import SQLiteStore


async def _noop(info: StepInfo) -> None:
    return None


async def _steps_per_run(path: Path, durability: str, steps: int) -> float:
    """µs per step for one run of `steps` no-op steps."""
    store = SQLiteStore(path, durability=durability)  # type: ignore[arg-type]
    await store.open()
    try:
        run_id, trace_id, now = f"run_{time.monotonic_ns()}", new_trace_id(), time.time()
        await store.ensure_conversation(
            run_id, tenant="t", agent="bench", ttl_seconds=3600, state="AWAITING_INPUT"
        )
        await store.create_run(
            run_id=run_id,
            conversation_id=run_id,
            tenant="t",
            agent="bench",
            input={},
            trace_id=trace_id,
            deadline_at=None,
            busy_policy="enqueue",
            event=EventRecord(
                run_id=run_id,
                seq=1,
                type="run.queued",
                name="queued",
                trace_id=trace_id,
                span_id="q",
                parent_span_id=run_span_id(run_id),
                start=now,
                end=now,
            ),
        )
        lease = await store.claim(
            run_id, owner="bench", expected_epoch=0, lease_seconds=60, now=time.time()
        )
        assert lease is not None
        emitter = RunEmitter(run_id, trace_id, next_seq=2)
        journal = Journal(store, lease, emitter, {}, lease_seconds=60)
        start = time.perf_counter()
        for _ in range(steps):
            await journal.step("noop", _noop)
        elapsed = time.perf_counter() - start
        return elapsed / steps * 1e6
    finally:
        await store.close()


def _raw_commit(path: Path, synchronous: str, commits: int) -> float:
    """µs per single-row INSERT committed on its own, WAL mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    payload = "x" * 200
    start = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / commits * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    steps = 50 if quick else 2000
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-") as folder:
        base = Path(folder)
        results: dict[str, Any] = {"steps_per_run": steps, "repeats": repeats}
        for durability, sync in (("normal", "NORMAL"), ("full", "FULL")):
            step_us = min(
                asyncio.run(_steps_per_run(base / f"steps-{durability}.db", durability, steps))
                for _ in range(repeats)
            )
            raw_us = min(
                _raw_commit(base / f"raw-{durability}.db", sync, steps) for _ in range(repeats)
            )
            results[f"step_us_{durability}"] = round(step_us, 1)
            results[f"raw_commit_us_{durability}"] = round(raw_us, 1)
            results[f"ratio_{durability}"] = round(step_us / raw_us, 2)
    lines = [
        f"durable steps: runs of {steps} no-op steps, best of {repeats}, in one process",
        f"{'durability':12} {'step (µs)':>10} {'raw WAL commit (µs)':>20} {'ratio':>7}",
    ]
    for durability in ("normal", "full"):
        lines.append(
            f"{durability:12} {results[f'step_us_{durability}']:>10.1f} "
            f"{results[f'raw_commit_us_{durability}']:>20.1f} "
            f"{results[f'ratio_{durability}']:>7.2f}"
        )
    verdict = "met" if results["step_us_normal"] <= 100 else "NOT met"
    lines.append(f"target: <= 100 µs per step with durability normal: {verdict}")
    results["lines"] = lines
    return results
