"""Fleet throughput on PostgreSQL: demo turns drained by 1, 2, 4 and 8 worker processes,
each next to the server's commit rate measured beside it.

Needs `--store postgresql://...` (in throwaway schemas of that database, dropped at the
end). For each number of workers W:

1. the server's commit rate: 4*W clients (as many as the fleet runs turns at once) doing
   single-row INSERTs, each its own transaction, for a few seconds (with `pgbench` when
   it is installed, else Python threads; the report says which);
2. 1,000 demo turns (`--quick`: 40; the `support` agent, four turns per conversation) are
   queued, then W `orchestrion worker` processes (`--concurrency 4`, the default) drain
   them; turns per second from the first claim to the last completion (store timestamps,
   so process start-up is not counted).

The bound is commits/s divided by the commits a demo turn costs (store write calls, each
one transaction, counted in this process over a few turns); the ratio says how close the
fleet gets to what the server can commit. The workers, the clients and the server share
this machine's cores.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from orchestrion import Orchestrion

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the CLI loads benchmarks by path: let them find _workload
    sys.path.insert(0, _HERE)
import _workload as w  # noqa: E402

WORKER_CONCURRENCY = 4


def _sizes(quick: bool) -> tuple[tuple[int, ...], int, int, int]:
    """(worker counts, turns per count, seconds of commit-rate measurement, counted turns)"""
    return ((1, 2), 40, 1, 3) if quick else ((1, 2, 4, 8), 1000, 5, 20)


async def _commits_per_demo_turn(url: str, turns: int) -> float:
    from orchestrion.demo.support import support_agent

    async with Orchestrion(url, agents=[support_agent()]) as orx:
        await orx.send("support", "I'm customer 42: move me to Friday 10:00")  # warm up
        counter = w.StoreCounter(orx.store).install()
        per_turn = []
        try:
            for i in range(turns):
                before = counter.writes
                await orx.send("support", f"I'm customer 42, turn {i}: move me to Friday 9:00")
                per_turn.append(counter.writes - before)
        finally:
            counter.remove()
    return w.median(per_turn)


def _pgbench_rate(conninfo: str, table: str, clients: int, seconds: int) -> float | None:
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(f"INSERT INTO {table} (v) VALUES (repeat('x', 200));\n")
        script.flush()
        jobs = str(min(clients, os.cpu_count() or 1))
        command = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", jobs]
        proc = subprocess.run(
            [*command, "-T", str(seconds), "-f", script.name, conninfo],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
    found = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return float(found.group(1))


def _threads_rate(conninfo: str, table: str, clients: int, seconds: int) -> float:
    import psycopg

    counts = [0] * clients
    connections = [psycopg.connect(conninfo, autocommit=True) for _ in range(clients)]
    end = time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < end:
            connections[i].execute(f"INSERT INTO {table} (v) VALUES (%s)", (w.PAYLOAD,))
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    for conn in connections:
        conn.close()
    return sum(counts) / elapsed


def _commit_rate(conninfo: str, schema: str, clients: int, seconds: int) -> tuple[float, str]:
    """Single-row INSERT commits per second with `clients` concurrent clients."""
    import psycopg

    table = f'"{schema}".t'
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f"CREATE TABLE {table} (k BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
    rate = _pgbench_rate(conninfo, table, clients, seconds)
    if rate is not None:
        return rate, "pgbench"
    return _threads_rate(conninfo, table, clients, seconds), "python threads"


def _fleet(url: str, conninfo: str, schema: str, workers: int, turns: int) -> float:
    asyncio.run(w.submit_demo_turns(url, turns))
    procs = w.start_workers(url, workers, "--concurrency", str(WORKER_CONCURRENCY))
    try:
        return w.wait_finished(conninfo, schema, turns, workers)
    finally:
        w.stop_workers(procs)


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    if not w.is_postgres(store):
        raise click.UsageError(
            "bench fleet measures worker processes sharing a PostgreSQL store: "
            "give --store postgresql://user@host/db"
        )
    assert store is not None
    from orchestrion.store.postgres import parse_postgres_url

    counts, turns, seconds, counted = _sizes(quick)
    conninfo, _schema, where = parse_postgres_url(store)
    results: dict[str, Any] = {"server": where, "turns": turns, "worker_counts": list(counts)}
    with w.pg_schemas(conninfo) as schema:
        results["throwaway_prefix"] = schema.prefix
        per_turn = asyncio.run(
            _commits_per_demo_turn(w.pg_schema_url(store, schema("count")), counted)
        )
        results["commits_per_demo_turn"] = per_turn
        for workers in counts:
            clients = WORKER_CONCURRENCY * workers
            rate, tool = _commit_rate(conninfo, schema(f"rate{workers}"), clients, seconds)
            name = schema(f"fleet{workers}")
            turns_per_s = _fleet(w.pg_schema_url(store, name), conninfo, name, workers, turns)
            bound = rate / per_turn
            results[f"turns_per_s_{workers}"] = round(turns_per_s, 1)
            results[f"commits_per_s_{workers}"] = round(rate, 1)
            results[f"bound_turns_per_s_{workers}"] = round(bound, 1)
            results[f"ratio_to_bound_{workers}"] = round(turns_per_s / bound, 3)
            results["commit_rate_client"] = tool
    lines = [
        f"fleet on PostgreSQL at {where}: {turns} queued demo turns (agent support, 4 per "
        f"conversation) drained by W `orchestrion worker` processes (--concurrency "
        f"{WORKER_CONCURRENCY} each), throwaway schemas",
        f"  a demo turn costs {per_turn:g} commits (store write calls, median of {counted} "
        "turns counted in this process)",
        f"  server commit rate: single-row INSERT commits with 4*W concurrent clients for "
        f"{seconds} s ({results['commit_rate_client']}), measured just before each fleet run",
        f"  {'W':>3} {'turns/s':>9} {'commits/s':>10} {'bound turns/s':>14} {'ratio':>7}",
    ]
    for workers in counts:
        lines.append(
            f"  {workers:>3} {results[f'turns_per_s_{workers}']:>9.1f} "
            f"{results[f'commits_per_s_{workers}']:>10.1f} "
            f"{results[f'bound_turns_per_s_{workers}']:>14.1f} "
            f"{results[f'ratio_to_bound_{workers}']:>7.3f}"
        )
    results["lines"] = lines
    return results
