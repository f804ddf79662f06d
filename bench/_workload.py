"""What several benchmarks share (not a benchmark itself: its name starts with "_").

- The workload of issues 12 and 19, as a new user writes it: an `Agent` whose
  `ScriptedModel` calls an async no-op `@tool` N times in sequence, then answers.
- Counters of what a turn costs the store: commits (SQLite: every COMMIT its connection
  executes; any store: calls of its write methods, each one transaction) and rows.
- Raw-commit baselines measured in the same process: a single-row INSERT committed on its
  own, in a SQLite WAL file at a given `synchronous` level, or on a PostgreSQL server.
- Throwaway places: temporary SQLite folders beside a given store, PostgreSQL schemas
  that are dropped afterwards.
- Statistics: medians and percentiles.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from orchestrion import Agent, Orchestrion, ScriptedModel, Tool, call, say, tool
from orchestrion.store import open_store
from orchestrion.store.base import Store
from orchestrion.store.sqlite import SQLiteStore

TOOL_CALLS = 10
AGENT = "bench"
ANSWER = "done"


def noop_tool(latency: float = 0.0) -> Tool:
    """The async no-op tool (read-only, every other setting default); with `latency`, it
    sleeps that long first (a simulated tool)."""

    @tool(name="noop")
    async def noop(i: int) -> None:
        """Do nothing with i."""
        if latency:
            await asyncio.sleep(latency)

    return noop


def sequential_agent(
    tool_calls: int = TOOL_CALLS, *, model_latency: float = 0.0, tool_latency: float = 0.0
) -> Agent:
    """An agent whose model calls the tool `tool_calls` times, one call per model reply,
    then answers: a turn is `tool_calls + 1` model steps and `tool_calls` tool steps."""
    script = [call("noop", i=i) for i in range(tool_calls)] + [say(ANSWER)]
    model = ScriptedModel(script, latency=model_latency)
    return Agent(AGENT, model=model, tools=[noop_tool(tool_latency)])


def simulated_seconds(tool_calls: int, model_latency: float, tool_latency: float) -> float:
    """The latency a turn of `sequential_agent` waits for by construction."""
    return (tool_calls + 1) * model_latency + tool_calls * tool_latency


# ---- what a turn costs the store ----------------------------------------------------------

# Store methods that only read (or wait); every other public coroutine method of the Store
# interface writes, in one transaction (or one autocommitted statement).
READ_METHODS = frozenset(
    {
        "open",
        "close",
        "schema_version",
        "wait_for_work",
        "wait_for_events",
        "get_conversation",
        "history",
        "history_page",
        "get_run",
        "list_runs",
        "next_claimable",
        "queue_heads",
        "cancel_requested",
        "orphan_candidates",
        "load_steps",
        "read_events",
        "read_events_of",
        "last_event_seq",
        "list_effects",
        "breaker_load",
        "list_breakers",
        "load_attempt",
        "cache_get",
    }
)


def write_methods() -> list[str]:
    names = []
    for klass in Store.__mro__:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in READ_METHODS:
                continue
            if inspect.iscoroutinefunction(value):
                names.append(name)
    return sorted(set(names))


class StoreCounter:
    """Counts, while installed, what a store's owner makes it write.

    `writes`: calls of the store's write methods by its callers (a write method that calls
    another counts once); each is one transaction. `commits` and `rows` (SQLite only): the
    COMMIT statements its connection executed and the rows they changed (total_changes),
    the ground truth whatever the method names."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0
        self.commits = 0
        self._rows_base = 0
        self._depth: contextvars.ContextVar[int] = contextvars.ContextVar("depth", default=0)
        self._installed: list[str] = []

    @property
    def sqlite(self) -> bool:
        return isinstance(self.store, SQLiteStore)

    @property
    def rows(self) -> int:
        if not isinstance(self.store, SQLiteStore):
            return 0
        return self.store.conn.total_changes - self._rows_base

    def _wrap(self, name: str) -> None:
        method = getattr(self.store, name)
        depth = self._depth

        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            if depth.get() == 0:
                self.writes += 1
            token = depth.set(depth.get() + 1)
            try:
                return await method(*args, **kwargs)
            finally:
                depth.reset(token)

        setattr(self.store, name, counted)
        self._installed.append(name)

    def _trace(self, statement: str) -> None:
        if statement.lstrip()[:6].upper() in ("COMMIT", "END"):
            self.commits += 1

    def install(self) -> StoreCounter:
        """Install on an open store."""
        for name in write_methods():
            self._wrap(name)
        if isinstance(self.store, SQLiteStore):
            self._rows_base = self.store.conn.total_changes
            self.store.conn.set_trace_callback(self._trace)
        return self

    def remove(self) -> None:
        for name in self._installed:
            delattr(self.store, name)  # the class's method shows through again
        self._installed.clear()
        if isinstance(self.store, SQLiteStore) and self.store._conn is not None:
            self.store.conn.set_trace_callback(None)

    def snapshot(self) -> tuple[int, int, int]:
        return self.writes, self.commits, self.rows


# ---- raw-commit baselines ------------------------------------------------------------------

PAYLOAD = "x" * 200


class RawSQLiteCommit:
    """Single-row INSERTs, each committed on its own, in a WAL file at `synchronous`."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")

    def measure(self, commits: int) -> float:
        """µs per commit."""
        start = time.perf_counter()
        for _ in range(commits):
            self.conn.execute("BEGIN")
            self.conn.execute("INSERT INTO t (v) VALUES (?)", (PAYLOAD,))
            self.conn.execute("COMMIT")
        return (time.perf_counter() - start) / commits * 1e6

    def close(self) -> None:
        self.conn.close()


class RawPostgresCommit:
    """Single-row INSERTs, each committed on its own (autocommit), on one connection, in a
    table of the schema `schema` (created here; drop it with `pg_drop_schema`)."""

    def __init__(self, conninfo: str, schema: str) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self.conn.execute(f'CREATE TABLE "{schema}".t (k BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)')
        self.insert = f'INSERT INTO "{schema}".t (v) VALUES (%s)'
        for _ in range(10):  # let the statement be prepared, like the store's are
            self.conn.execute(self.insert, (PAYLOAD,))

    def measure(self, commits: int) -> float:
        """µs per commit."""
        start = time.perf_counter()
        for _ in range(commits):
            self.conn.execute(self.insert, (PAYLOAD,))
        return (time.perf_counter() - start) / commits * 1e6

    def close(self) -> None:
        self.conn.close()


# ---- throwaway places ----------------------------------------------------------------------


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def sqlite_folder(store: str | None, benchmark: str) -> Path | None:
    """The folder of the given SQLite store (throwaway files go there, on its disk), None
    without a store; a clear error for anything else."""
    if store is None:
        return None
    sqlite_store = open_store(store)  # refuses a malformed URL
    if not isinstance(sqlite_store, SQLiteStore):
        raise ValueError(f"bench {benchmark} measures sqlite or postgresql://, not {store!r}")
    near = sqlite_store.path.resolve().parent
    if not near.is_dir():
        raise ValueError(f"bench {benchmark}: folder {near} of {store} does not exist")
    return near


def pg_schema_url(url: str, schema: str) -> str:
    """The same server and database, another schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"] + [("schema", schema)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def pg_prefix() -> str:
    return f"orchestrion_bench_{uuid.uuid4().hex[:8]}"


def pg_drop_schema(conninfo: str, schema: str) -> None:
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


class Schemas:
    """Names throwaway schemas `{prefix}_{suffix}`; `pg_schemas` drops them all."""

    def __init__(self) -> None:
        self.prefix = pg_prefix()
        self.named: list[str] = []

    def __call__(self, suffix: str) -> str:
        self.named.append(f"{self.prefix}_{suffix}")
        return self.named[-1]


@contextmanager
def pg_schemas(conninfo: str) -> Iterator[Schemas]:
    """Yields a `Schemas`; every schema it named is dropped at the end."""
    schemas = Schemas()
    try:
        yield schemas
    finally:
        for schema in schemas.named:
            pg_drop_schema(conninfo, schema)


# ---- demo turns drained by worker processes (PostgreSQL) ---------------------------------


async def submit_demo_turns(url: str, turns: int) -> None:
    """Queue `turns` turns of the demo agent, four per conversation."""
    from orchestrion.demo.support import support_agent

    async with Orchestrion(url, agents=[support_agent()]) as orx:
        for i in range(turns):
            await orx.submit(
                "support",
                f"I'm customer 42, turn {i}: move me to Friday {i % 12}:00",
                conversation=f"bench-{i % max(1, turns // 4)}",
            )


def start_workers(url: str, workers: int, *extra: str) -> list[subprocess.Popen[bytes]]:
    cli = str(Path(sys.executable).parent / "orchestrion")
    return [
        subprocess.Popen(
            [cli, "--store", url, "worker", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_finished(conninfo: str, schema: str, turns: int, workers: int) -> float:
    """Turns per second from the first claim to the last completion of `turns` runs (store
    timestamps, so process start-up is not counted); waits until all have ended."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            row = conn.execute(
                f'SELECT count(*), min(started_at), max(finished_at) FROM "{schema}".runs '
                "WHERE status IN ('succeeded', 'failed', 'cancelled')"
            ).fetchone()
            assert row is not None
            if row[0] == turns:
                return float(turns / (row[2] - row[1]))
            time.sleep(0.05)
    raise RuntimeError(f"{turns} turns did not finish on {workers} worker(s)")


# ---- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the values lie (nearest rank)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return float(ordered[index])
