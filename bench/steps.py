"""Microseconds per durable step, next to a raw SQLite WAL commit in the same process.

A durable step here is what the engine does for every journaled step: consult the
journal, run the (no-op) function, and commit the step record with its span event and
the lease renewal in one fenced transaction.

With `store="postgresql://..."` (`orchestrion bench steps --store postgresql://...`) it
measures the PostgreSQL backend instead, in throwaway schemas of that database: µs per
durable step next to a raw single-row INSERT commit on the same server, and turns per
second of the demo agent with 1, 2 and 4 `orchestrion worker` processes.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from orchestrion.engine.journal import Journal, StepInfo
from orchestrion.observe.events import RunEmitter, new_trace_id, run_span_id
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, Store
from orchestrion.store.sqlite import SQLiteStore

STEPS_PER_DEMO_TURN = 6


async def _noop(info: StepInfo) -> None:
    return None


async def _steps_per_run(path: Path, durability: str, steps: int) -> float:
    """µs per step for one run of `steps` no-op steps."""
    return await _steps_on(SQLiteStore(path, durability=durability), steps)  # type: ignore[arg-type]


async def _steps_on(store: Store, steps: int) -> float:
    """µs per step for one run of `steps` no-op steps on an unopened store."""
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


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    if store is not None and store.startswith(("postgresql://", "postgres://")):
        return run_postgres(store, quick=quick)
    near = None  # SQLite: throwaway files in the folder of the given store (its disk)
    if store is not None:
        sqlite_store = open_store(store)  # refuses a malformed URL
        if not isinstance(sqlite_store, SQLiteStore):
            raise ValueError(f"bench steps measures sqlite or postgresql://, not {store!r}")
        near = sqlite_store.path.resolve().parent
        if not near.is_dir():
            raise ValueError(f"bench steps: folder {near} of {store} does not exist")
    steps = 50 if quick else 2000
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-", dir=near) as folder:
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
        f"durable steps: runs of {steps} no-op steps, best of {repeats}, in one process, "
        f"in temporary SQLite files in {near or tempfile.gettempdir()}",
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


# ---- PostgreSQL ------------------------------------------------------------------------------


def _pg_url(url: str, schema: str) -> str:
    """The same server and database, another schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _pg_drop(conninfo: str, schema: str) -> None:
    import psycopg

    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError:
        return  # the server cannot be reached: nothing was created there either
    with conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"orchestrion/{schema}",),
        )
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _pg_raw_commit(conninfo: str, schema: str, commits: int) -> float:
    """µs per single-row INSERT committed on its own (autocommit), same server."""
    import psycopg

    payload = "x" * 200
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".t (k BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)')
        insert = f'INSERT INTO "{schema}".t (v) VALUES (%s)'
        for _ in range(10):  # let the statement be prepared, like the store's are
            conn.execute(insert, (payload,))
        start = time.perf_counter()
        for _ in range(commits):
            conn.execute(insert, (payload,))
        elapsed = time.perf_counter() - start
    return elapsed / commits * 1e6


async def _pg_submit(url: str, turns: int) -> None:
    from orchestrion import Orchestrion
    from orchestrion.demo.support import support_agent

    async with Orchestrion(url, agents=[support_agent()]) as orx:
        for i in range(turns):
            await orx.submit(
                "support",
                f"I'm customer 42, turn {i}: move me to Friday {i % 12}:00",
                conversation=f"bench-{i % max(1, turns // 4)}",
            )


def _pg_turns_per_second(url: str, conninfo: str, schema: str, workers: int, turns: int) -> float:
    """Queue `turns` demo turns, then let `workers` worker processes run them; turns per
    second from the first claim to the last completion (store timestamps, so process
    start-up is not counted)."""
    import psycopg

    asyncio.run(_pg_submit(url, turns))
    cli = str(Path(sys.executable).parent / "orchestrion")
    procs = [
        subprocess.Popen(
            [cli, "--store", url, "worker", "--concurrency", "4"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                row = conn.execute(
                    f'SELECT count(*), min(started_at), max(finished_at) FROM "{schema}".runs '
                    "WHERE status IN ('succeeded', 'failed', 'cancelled')"
                ).fetchone()
                assert row is not None
                if row[0] == turns:
                    return float(turns / (row[2] - row[1]))
                time.sleep(0.02)
            raise RuntimeError(f"{turns} turns did not finish on {workers} worker(s)")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_postgres(url: str, quick: bool = False) -> dict[str, Any]:
    from orchestrion.store.postgres import PostgresStore, parse_postgres_url

    steps = 50 if quick else 2000
    repeats = 1 if quick else 3
    turns = 20 if quick else 200
    conninfo, _schema, where = parse_postgres_url(url)
    prefix = f"orchestrion_bench_{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {
        "store": "postgresql",
        "server": where,
        "steps_per_run": steps,
        "repeats": repeats,
        "turns": turns,
    }
    schemas: list[str] = []
    try:
        schemas.append(f"{prefix}_steps")
        step_url = _pg_url(url, schemas[-1])
        step_us = min(
            asyncio.run(_steps_on(PostgresStore(step_url), steps)) for _ in range(repeats)
        )
        schemas.append(f"{prefix}_raw")
        raw_us = _pg_raw_commit(conninfo, schemas[-1], steps * repeats)
        results["step_us_postgres"] = round(step_us, 1)
        results["raw_commit_us_postgres"] = round(raw_us, 1)
        results["ratio_postgres"] = round(step_us / raw_us, 2)
        for workers in (1, 2, 4):
            schemas.append(f"{prefix}_w{workers}")
            rate = _pg_turns_per_second(
                _pg_url(url, schemas[-1]), conninfo, schemas[-1], workers, turns
            )
            results[f"turns_per_s_{workers}_workers"] = round(rate, 1)
    finally:
        for schema in schemas:
            _pg_drop(conninfo, schema)
    lines = [
        f"PostgreSQL at {where}: runs of {steps} no-op steps, best of {repeats}, in one process",
        f"{'store':12} {'step (µs)':>10} {'raw INSERT commit (µs)':>23} {'ratio':>7}",
        f"{'postgresql':12} {results['step_us_postgres']:>10.1f} "
        f"{results['raw_commit_us_postgres']:>23.1f} {results['ratio_postgres']:>7.2f}",
        f"demo turns ({STEPS_PER_DEMO_TURN} durable steps each), {turns} queued, "
        "worker processes with --concurrency 4:",
    ]
    for workers in (1, 2, 4):
        lines.append(
            f"  {workers} worker(s): {results[f'turns_per_s_{workers}_workers']:>8.1f} turns/s"
        )
    results["lines"] = lines
    return results
