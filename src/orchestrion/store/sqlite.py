"""The embedded SQLite backend: one file, WAL, safe to share between processes.

Why synchronous sqlite3 calls on the event loop rather than a thread or aiosqlite: each
operation is one short transaction (tens of microseconds); a thread hop would cost more
than the work. Lock contention between processes is the exception, and it is waited out
asynchronously (see `_write`), so it never blocks the loop for long and never surfaces as
"database is locked".

Reads that can be large (a history, a page of a trace, a run's events from the start)
are the exception to the exception: they run in worker threads, each on its own
read-only connection (WAL lets readers proceed beside the writer), so a tenant reading
its longest conversation never stalls the loop that renews leases and feeds streams.
Reads that are small by construction, like a stream's next few events, stay on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from orchestrion.errors import (
    ConversationBusy,
    NoStore,
    NotAnOrchestrionStore,
    NotFound,
    SchemaTooNew,
    StoreBusy,
    StoreConflict,
    StoreError,
)
from orchestrion.store.base import (
    BusyPolicy,
    ConversationRecord,
    Durability,
    EffectRecord,
    EventRecord,
    Lease,
    MessageRecord,
    NewConversation,
    PurgeReport,
    QueueLimits,
    RunCompletion,
    RunRecord,
    StepRecord,
    Store,
    SummaryRecord,
    check_limit,
)
from orchestrion.store.migrations import SQLITE_APPLICATION_ID, SQLITE_MIGRATIONS
from orchestrion.store.rows import (
    ACTIVE_RUN_SQL,
    CLOSED_STATE,
    CONVERSATION_COLUMNS,
    EVENT_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    close_refused,
    conversation_closed,
    conversation_expired,
    conversation_from_row,
    dumps,
    event_from_row,
    events_by_run,
    history_query,
    lease_lost,
    loads,
    messages_from_rows,
    run_from_row,
    runs_query,
    summary_from_row,
    summary_params,
)

T = TypeVar("T")
log = logging.getLogger("orchestrion.store")

SQLITE_MAGIC = b"SQLite format 3\x00"
# How long one attempt may block the event loop waiting for another process's lock.
_BLOCKING_BUSY_MS = 20
# How often a waiting scheduler looks whether another connection committed.
WORK_CHECK = 0.05
# How often the WAL is checkpointed into the database file (off the event loop).
CHECKPOINT_EVERY = 1.0
# Reads of at most this many rows run on the loop; longer ones in a reader thread.
INLINE_ROWS = 64
# Reader threads (each with its own read-only connection): large reads beyond this many
# at once wait their turn, so they cannot take every core from the loop.
READER_THREADS = 2


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    message = str(exc).lower()
    return "locked" in message or "busy" in message


# What SQLite says when the environment fails, and what the user can do about it.
_ENVIRONMENT_FAULTS = (
    ("disk is full", "the disk is full: free some space (or `orchestrion purge`), then retry"),
    (
        "readonly database",
        "the file (or its folder) is read-only: make both writable by this user",
    ),
    ("disk i/o error", "the disk reported an I/O error: check the disk and the file system"),
    (
        "unable to open database",
        "the file cannot be opened: check that its folder exists and is writable",
    ),
)


def _environment_fault(path: Path, exc: sqlite3.OperationalError) -> StoreError | None:
    message = str(exc).lower()
    for needle, advice in _ENVIRONMENT_FAULTS:
        if needle in message:
            return StoreError(f"store {path}: {exc}; {advice}. Nothing was written.")
    return None


def _event_rows(events: Iterable[EventRecord]) -> list[tuple[Any, ...]]:
    return [
        (
            e.run_id,
            e.seq,
            e.type,
            e.name,
            e.trace_id,
            e.span_id,
            e.parent_span_id,
            e.start,
            e.end,
            e.latency_ms,
            e.status,
            dumps(e.attributes),
        )
        for e in events
    ]


_ACTIVE_RUN = ACTIVE_RUN_SQL.format(mark="?")
_INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_STEP = (
    "INSERT INTO steps (run_id, seq, name, status, result, error, idempotency_key, "
    "started_at, finished_at, epoch) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _step_row(step: StepRecord) -> tuple[Any, ...]:
    return (
        step.run_id,
        step.seq,
        step.name,
        step.status,
        step.result,
        step.error,
        step.idempotency_key,
        step.started_at,
        step.finished_at,
        step.epoch,
    )


def _fence(
    conn: sqlite3.Connection,
    lease: Lease,
    renew_until: float | None = None,
    *,
    only_if_before: float | None = None,
) -> None:
    """Refuse the transaction unless the lease is still the run's current one.

    `renew_until` also extends the lease. With `only_if_before`, it is extended only when
    it would expire before that time: most steps then dirty no page of the runs table,
    which keeps each step's commit one page smaller."""
    if renew_until is not None and only_if_before is None:
        ok = (
            conn.execute(
                "UPDATE runs SET lease_expires_at = ? "
                "WHERE id = ? AND epoch = ? AND status = 'running'",
                (renew_until, lease.run_id, lease.epoch),
            ).rowcount
            == 1
        )
    else:
        row = conn.execute(
            "SELECT lease_expires_at FROM runs WHERE id = ? AND epoch = ? AND status = 'running'",
            (lease.run_id, lease.epoch),
        ).fetchone()
        ok = row is not None
        if ok and renew_until is not None and (row[0] is None or row[0] < only_if_before):
            conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE id = ?", (renew_until, lease.run_id)
            )
    if not ok:
        raise lease_lost(lease)


def _within_limits(conn: sqlite3.Connection, limits: QueueLimits, agent: str, now: float) -> bool:
    """Whether a run of queue `agent` may start now; takes a token when it may."""
    if limits.queue != agent:
        raise ValueError(f"limits of queue {limits.queue!r} given for a run of queue {agent!r}")
    if limits.max_running is not None:
        running = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'running' AND agent = ?", (agent,)
        ).fetchone()[0]
        if running >= limits.max_running:
            return False
    if limits.max_per_second is not None:
        bucket = conn.execute(
            "SELECT tokens, updated_at FROM queue_limits WHERE queue = ?", (agent,)
        ).fetchone()
        left = limits.take_token(bucket, now)
        if left is None:
            return False
        conn.execute(
            "INSERT INTO queue_limits (queue, tokens, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (queue) DO UPDATE SET tokens = excluded.tokens, "
            "updated_at = max(queue_limits.updated_at, excluded.updated_at)",
            (agent, left, now),
        )
    return True


def _has_room(conn: sqlite3.Connection, limits: QueueLimits, now: float) -> bool:
    """Whether queue `limits.queue` could start a run now (a read-only look; the claim
    decides, atomically, and takes the token)."""
    if limits.max_running is not None:
        running = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'running' AND agent = ?", (limits.queue,)
        ).fetchone()[0]
        if running >= limits.max_running:
            return False
    if limits.max_per_second is not None:
        bucket = conn.execute(
            "SELECT tokens, updated_at FROM queue_limits WHERE queue = ?", (limits.queue,)
        ).fetchone()
        if limits.take_token(bucket, now) is None:
            return False
    return True


def _check_summary_owner(conn: sqlite3.Connection, lease: Lease, summary: SummaryRecord) -> None:
    """A run stores summaries of its own conversation only (the caller fenced the lease)."""
    row = conn.execute("SELECT conversation_id FROM runs WHERE id = ?", (lease.run_id,)).fetchone()
    if summary.run_id != lease.run_id or row is None or row[0] != summary.conversation_id:
        raise ValueError(
            f"run {lease.run_id} cannot store a summary of run {summary.run_id} of "
            f"conversation {summary.conversation_id!r}: only of its own conversation"
        )


def _move_conversation(conn: sqlite3.Connection, lease: Lease, state: str) -> None:
    """Set the state of the run's conversation (the caller fenced the lease)."""
    conn.execute(
        "UPDATE conversations SET state = ?, updated_at = ? "
        "WHERE id = (SELECT conversation_id FROM runs WHERE id = ?)",
        (state, time.time(), lease.run_id),
    )


def inspect_sqlite_file(path: Path) -> str:
    """Classify a store file without writing to it: "new", or "ours"; raise otherwise."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a store file. It was left untouched.")
    if path.exists() and not path.is_file():
        raise StoreError(
            f"{path} is not a regular file (a device, a pipe or a socket); a store must be "
            "a file. It was left untouched; point --store at a file path."
        )
    if not path.exists() or path.stat().st_size == 0:
        return "new"
    with path.open("rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_MAGIC):
        raise NotAnOrchestrionStore(
            f"{path} is not an orchestrion store (not a SQLite database). It was left "
            "untouched; point --store at another file or move this one away."
        )
    sidecars = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    existed = [p.exists() for p in sidecars]
    try:
        # mode=ro: nothing in the main file can change while we look.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        for sidecar, was_there in zip(sidecars, existed, strict=True):
            if not was_there:
                sidecar.unlink(missing_ok=True)
        raise StoreError(
            f"{path} cannot be read as a SQLite database ({exc}); it may be corrupt. It was "
            "left untouched."
        ) from exc
    refusal: StoreError | None = None
    if app_id != SQLITE_APPLICATION_ID and (app_id != 0 or tables > 0):
        refusal = NotAnOrchestrionStore(
            f"{path} is a SQLite database of another application (application_id={app_id}, "
            f"{tables} schema objects). It was left untouched; point --store at another file."
        )
    elif version > len(SQLITE_MIGRATIONS):
        refusal = SchemaTooNew(
            f"{path} has schema version {version}, newer than this orchestrion supports "
            f"({len(SQLITE_MIGRATIONS)}). It was left untouched; upgrade orchestrion to use it."
        )
    if refusal is not None:
        # Reading a WAL-mode file read-only may leave empty sidecar files: take them back.
        for sidecar, was_there in zip(sidecars, existed, strict=True):
            if not was_there:
                sidecar.unlink(missing_ok=True)
        raise refusal
    return "ours" if app_id == SQLITE_APPLICATION_ID else "new"


class _Readers:
    """Worker threads that read the store, each on its own read-only connection."""

    def __init__(self, path: Path, threads: int) -> None:
        self.uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        self.path = path
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="orchestrion-sqlite-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.uri, uri=True, check_same_thread=False)
            # In WAL mode readers wait only in rare cases (recovery); waiting in a
            # worker thread blocks nobody.
            conn.execute("PRAGMA busy_timeout = 10000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._connection())
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StoreBusy(f"{self.path} stayed locked while reading: {exc}") from exc
            raise StoreError(f"{self.path} cannot be read ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} cannot be read ({exc}); it may be corrupt") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._pool.submit(self._call, fn))

    async def close(self) -> None:
        # Reads in flight (and queued) finish first; their connections are closed after.
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


class SQLiteStore(Store):
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        busy_patience: float = 30.0,
        create: bool = True,
    ) -> None:
        """`create=False`: opening raises NoStore unless the file already holds a store."""
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.durability = durability
        self.busy_patience = busy_patience
        self.create = create
        self._conn: sqlite3.Connection | None = None
        self._readers: _Readers | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        # Readers in this process waiting for a run's next events (see wait_for_events).
        self._event_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._work_waiters: list[asyncio.Future[None]] = []

    # ---- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        if not self.create and not self.path.exists():
            raise NoStore(
                f"no store at {self.path}: no such file (check --store; the first command "
                "that writes, such as `orchestrion demo` or a worker, creates it)"
            )
        if self.path.parent and not self.path.parent.exists():
            raise StoreError(
                f"cannot create store {self.path}: folder {self.path.parent} does not exist"
            )
        if inspect_sqlite_file(self.path) == "new" and not self.create:
            raise NoStore(f"no store at {self.path}: the file holds no orchestrion store yet")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise _environment_fault(self.path, exc) or StoreError(
                f"store {self.path}: {exc}"
            ) from exc
        conn.execute(f"PRAGMA busy_timeout = {_BLOCKING_BUSY_MS}")
        self._conn = conn
        try:
            await self._write(self._migrate)
            await self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            sync = "NORMAL" if self.durability == "normal" else "FULL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA foreign_keys = OFF")
            # Checkpoints (copying the WAL into the file, and its fsync) happen in a
            # background thread, not inside a commit on the event loop.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            self._conn = None
            raise
        self._readers = _Readers(self.path, READER_THREADS)
        self._checkpointer = asyncio.create_task(self._checkpoint_often())

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # Checked again inside the write lock: another process may have created it meanwhile.
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != SQLITE_APPLICATION_ID and (app_id != 0 or tables > 0):
            raise NotAnOrchestrionStore(f"{self.path} is a SQLite database of another application")
        if version > len(SQLITE_MIGRATIONS):
            raise SchemaTooNew(f"{self.path} has schema version {version}, newer than supported")
        for number in range(version + 1, len(SQLITE_MIGRATIONS) + 1):
            for statement in SQLITE_MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        if app_id != SQLITE_APPLICATION_ID:
            conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")

    async def _checkpoint_often(self) -> None:
        """Every CHECKPOINT_EVERY seconds, a PASSIVE checkpoint (never waits for readers or
        writers) on a connection of its own, in a thread."""
        uri = f"file:{quote(str(self.path.resolve()))}"
        conn = await asyncio.to_thread(
            sqlite3.connect, uri, uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_EVERY)
                try:
                    await asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the next one tries again
                    log.debug("checkpoint of %s failed: %s", self.path, exc)
        finally:
            await asyncio.to_thread(conn.close)

    async def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await checkpointer
        readers, self._readers = self._readers, None
        if readers is not None:
            await readers.close()
        if self._conn is not None:  # last: the last connection to close checkpoints the WAL
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(
                "the store is not open (use `async with store:` or `await store.open()`)"
            )
        return self._conn

    async def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # ---- transactions -----------------------------------------------------------------

    async def _retry_busy(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_patience
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    fault = _environment_fault(self.path, exc)
                    if fault is not None:
                        raise fault from exc
                    raise
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"{self.path} stayed locked by other writers for over "
                        f"{self.busy_patience:.0f}s; is a process stuck holding a transaction?"
                    ) from exc
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.05)
            except sqlite3.DatabaseError as exc:
                if type(exc) is sqlite3.DatabaseError:  # "malformed", "not a database"
                    raise StoreError(
                        f"{self.path} cannot be read ({exc}); it may be corrupt"
                    ) from exc
                raise

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one IMMEDIATE transaction; lock contention is retried, never raised.

        `fn` is synchronous on purpose: no other task can interleave inside a transaction.
        """
        conn = self.conn

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise StoreConflict(f"{self.path}: write refused: {exc}") from exc
                raise
            return result

        return await self._retry_busy(attempt)

    async def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = self.conn
        return await self._retry_busy(lambda: conn.execute(sql, params).fetchall())

    async def _read_large(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read that can be large in a reader thread (see the module's docstring)."""
        readers = self._readers
        if readers is None:
            self.conn  # noqa: B018 (raises the error of a store that is not open)
            raise StoreError("the store is closing")
        return await readers.run(fn)

    # ---- wake-ups -------------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when this store object queued, released or ended a run, when another
        connection (another process, or another store object) committed anything, or
        after `timeout`. Other connections' commits are seen by SQLite's `data_version`,
        one tiny read every WORK_CHECK seconds, whatever the number of waiting runs."""
        conn = self.conn
        loop = asyncio.get_running_loop()
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        waiter: asyncio.Future[None] = loop.create_future()
        self._work_waiters.append(waiter)
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), min(WORK_CHECK, left))
                if waiter.done() or self._conn is None:
                    return
                if conn.execute("PRAGMA data_version").fetchone()[0] != version:
                    return
        finally:
            if waiter in self._work_waiters:
                self._work_waiters.remove(waiter)
            waiter.cancel()

    def _work_changed(self) -> None:
        for waiter in self._work_waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_events(self, run_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Woken at once by this store object's own writes of the run's events (a reader
        in the process that executes the run); other processes' writes are found by the
        caller's polling, `timeout` later at most."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._event_waiters.setdefault(run_id, []).append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._event_waiters.get(run_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._event_waiters.pop(run_id, None)

    def _wake(self, run_id: str) -> None:
        for waiter in self._event_waiters.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(None)

    # ---- conversations ----------------------------------------------------------------

    async def ensure_conversation(
        self, conversation_id: str, *, tenant: str, agent: str, ttl_seconds: float, state: str
    ) -> ConversationRecord:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> ConversationRecord:
            conn.execute(
                "INSERT INTO conversations (id, tenant, agent, state, ttl_seconds, created_at, "
                "updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (conversation_id, tenant, agent, state, ttl_seconds, now, now, now + ttl_seconds),
            )
            row = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            record = conversation_from_row(row)
            if record.tenant != tenant:
                raise NotFound(f"conversation {conversation_id!r} not found")
            return record

        return await self._write(tx)

    async def get_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> ConversationRecord:
        rows = await self._read(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
        )
        if not rows or (tenant is not None and rows[0][1] != tenant):
            raise NotFound(f"conversation {conversation_id!r} not found")
        return conversation_from_row(rows[0])

    async def history(self, conversation_id: str) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT body FROM messages WHERE conversation_id = ? ORDER BY idx",
                (conversation_id,),
            ).fetchall()
            return [loads(r[0]) for r in rows]

        return await self._read_large(read)

    async def history_page(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None,
    ) -> list[MessageRecord]:
        sql, params, backward = history_query(
            conversation_id, mark="?", after=after, before=before, limit=limit
        )

        def read(conn: sqlite3.Connection) -> list[MessageRecord]:
            return messages_from_rows(conn.execute(sql, params).fetchall(), reverse=backward)

        return await self._read_large(read)

    async def history_tail(
        self,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> list[MessageRecord]:
        sql, params, backward = history_query(
            conversation_id, mark="?", after=after, before=before, limit=limit, newest=True
        )
        if limit <= INLINE_ROWS:  # a window is small: read it on the loop
            return messages_from_rows(await self._read(sql, tuple(params)), reverse=backward)

        def read(conn: sqlite3.Connection) -> list[MessageRecord]:
            return messages_from_rows(conn.execute(sql, params).fetchall(), reverse=backward)

        return await self._read_large(read)

    # ---- context summaries ------------------------------------------------------------

    async def load_summaries(self, conversation_id: str) -> list[SummaryRecord]:
        rows = await self._read(
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE conversation_id = ? "
            "ORDER BY last_idx DESC",
            (conversation_id,),
        )
        return [summary_from_row(r) for r in rows]

    async def save_summary(
        self, lease: Lease, summary: SummaryRecord, *, drop: tuple[int, int] | None = None
    ) -> SummaryRecord:
        def tx(conn: sqlite3.Connection) -> SummaryRecord:
            _fence(conn, lease)
            _check_summary_owner(conn, lease, summary)
            inserted = conn.execute(
                f"INSERT INTO summaries ({SUMMARY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                summary_params(summary),
            ).rowcount
            stored = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM summaries "
                "WHERE conversation_id = ? AND run_id = ? AND label = ?",
                (summary.conversation_id, summary.run_id, summary.label),
            ).fetchone()
            cid, run_id = summary.conversation_id, summary.run_id
            conn.execute(
                "DELETE FROM summaries WHERE conversation_id = ? AND run_id != ? AND last_idx < "
                "(SELECT max(last_idx) FROM summaries WHERE conversation_id = ? AND run_id != ?)",
                (cid, run_id, cid, run_id),
            )
            if inserted and drop is not None:
                conn.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND idx >= ? AND idx <= ?",
                    (cid, drop[0], drop[1]),
                )
            return summary_from_row(stored)

        return await self._write(tx)

    async def set_conversation_state(
        self,
        lease: Lease,
        conversation_id: str,
        expected: str,
        new: str,
        events: list[EventRecord],
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            cur = conn.execute(
                "UPDATE conversations SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
                (new, time.time(), conversation_id, expected),
            )
            if cur.rowcount != 1:
                raise StoreConflict(
                    f"conversation {conversation_id!r} is no longer in state {expected} "
                    "(changed concurrently)"
                )
            conn.executemany(_INSERT_EVENTS, _event_rows(events))

        await self._write(tx)
        self._wake(lease.run_id)

    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None, now: float
    ) -> ConversationRecord:
        def tx(conn: sqlite3.Connection) -> ConversationRecord:
            found = conn.execute(
                "SELECT tenant, state FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if found is None or (tenant is not None and found[0] != tenant):
                raise NotFound(f"conversation {conversation_id!r} not found")
            if found[1] != CLOSED_STATE:
                active = conn.execute(_ACTIVE_RUN, (conversation_id,)).fetchone()
                if active is not None:
                    raise close_refused(conversation_id, active[0])
                conn.execute(
                    "UPDATE conversations SET state = ?, updated_at = ? WHERE id = ?",
                    (CLOSED_STATE, now, conversation_id),
                )
            row = conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            return conversation_from_row(row)

        return await self._write(tx)

    # ---- runs -------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        run_id: str,
        conversation_id: str,
        tenant: str,
        agent: str,
        input: dict[str, Any],
        trace_id: str,
        deadline_at: float | None,
        busy_policy: BusyPolicy,
        event: EventRecord,
        new_conversation: NewConversation | None = None,
    ) -> RunRecord:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> RunRecord:
            if new_conversation is not None:
                ttl = new_conversation.ttl_seconds
                conn.execute(
                    "INSERT INTO conversations (id, tenant, agent, state, ttl_seconds, "
                    "created_at, updated_at, expires_at) VALUES (?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(id) DO NOTHING",
                    (
                        conversation_id,
                        tenant,
                        new_conversation.agent,
                        new_conversation.state,
                        ttl,
                        now,
                        now,
                        now + ttl,
                    ),
                )
            found = conn.execute(
                "SELECT tenant, state, expires_at FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
            if found is None or found[0] != tenant:
                raise NotFound(f"conversation {conversation_id!r} not found")
            if found[1] == CLOSED_STATE:
                raise conversation_closed(conversation_id)
            if busy_policy == "reject" or found[2] < now:
                active = conn.execute(_ACTIVE_RUN, (conversation_id,)).fetchone()
                if active is None and found[2] < now:  # idle past its expiry: EXPIRED
                    raise conversation_expired(conversation_id, found[2])
                if active is not None and busy_policy == "reject":
                    raise ConversationBusy(
                        f"conversation {conversation_id!r} already has an active run ({active[0]})"
                    )
            position = conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM runs").fetchone()[0]
            conn.execute(
                "INSERT INTO runs (id, conversation_id, tenant, agent, status, input, trace_id, "
                "deadline_at, position, created_at) VALUES (?,?,?,?,'queued',?,?,?,?,?)",
                (
                    run_id,
                    conversation_id,
                    tenant,
                    agent,
                    dumps(input),
                    trace_id,
                    deadline_at,
                    position,
                    now,
                ),
            )
            conn.executemany(_INSERT_EVENTS, _event_rows([event]))
            return RunRecord(
                id=run_id,
                conversation_id=conversation_id,
                tenant=tenant,
                agent=agent,
                status="queued",
                input=input,
                trace_id=trace_id,
                created_at=now,
                position=position,
                deadline_at=deadline_at,
            )

        created = await self._write(tx)
        self._work_changed()
        return created

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise NotFound(f"run {run_id!r} not found")
        return run_from_row(rows[0])

    async def list_runs(
        self,
        *,
        conversation_id: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        before_position: int | None = None,
        after_position: int | None = None,
        status: str | Sequence[str] | None = None,
        agent: str | None = None,
        oldest_first: bool = False,
    ) -> list[RunRecord]:
        sql, params = runs_query(
            mark="?",
            conversation_id=conversation_id,
            tenant=tenant,
            limit=limit,
            before_position=before_position,
            after_position=after_position,
            status=status,
            agent=agent,
            oldest_first=oldest_first,
        )
        if limit <= INLINE_ROWS:
            return [run_from_row(r) for r in await self._read(sql, tuple(params))]

        def read(conn: sqlite3.Connection) -> list[RunRecord]:
            return [run_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._read_large(read)

    async def next_claimable(
        self,
        *,
        agents: Collection[str],
        limits: Sequence[QueueLimits] = (),
        limit: int = 20,
    ) -> list[RunRecord]:
        if not agents:
            return []
        now = time.time()
        full = [q.queue for q in limits if not _has_room(self.conn, q, now)]
        wanted = [a for a in agents if a not in full]
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = await self._read(
            f"""
            SELECT {RUN_COLUMNS} FROM runs r INDEXED BY runs_queued
            WHERE r.status = 'queued' AND r.agent IN ({marks})
              AND NOT EXISTS (
                SELECT 1 FROM runs o INDEXED BY runs_active_by_conversation
                WHERE o.conversation_id = r.conversation_id
                  AND o.status IN ('queued', 'running') AND o.position < r.position)
            ORDER BY r.position LIMIT ?
            """,
            (*wanted, limit),
        )
        return [run_from_row(r) for r in rows]

    async def claim_next(
        self,
        *,
        owner: str,
        turn_timeouts: Mapping[str, float | None],
        lease_seconds: float,
        now: float,
    ) -> tuple[Lease, RunRecord] | None:
        agents = list(turn_timeouts)
        if not agents:
            return None
        marks = ",".join("?" * len(agents))
        pick = f"""
            SELECT r.id, r.agent FROM runs r INDEXED BY runs_queued
            WHERE r.status = 'queued' AND r.agent IN ({marks})
              AND NOT EXISTS (
                SELECT 1 FROM runs o INDEXED BY runs_active_by_conversation
                WHERE o.conversation_id = r.conversation_id
                  AND o.status IN ('queued', 'running') AND o.position < r.position)
            ORDER BY r.position LIMIT 1
        """

        def tx(conn: sqlite3.Connection) -> tuple[Lease, RunRecord] | None:
            # The IMMEDIATE transaction holds the write lock: the pick and the update are
            # one atomic step for every process on the file.
            row = conn.execute(pick, agents).fetchone()
            if row is None:
                return None
            run_id, agent = row
            timeout = turn_timeouts[agent]
            claimed = conn.execute(
                f"UPDATE runs SET status = 'running', owner = ?, epoch = epoch + 1, "
                "lease_expires_at = ?, started_at = COALESCE(started_at, ?), "
                "deadline_at = COALESCE(deadline_at, ?) WHERE id = ? "
                f"RETURNING {RUN_COLUMNS}",
                (
                    owner,
                    now + lease_seconds,
                    now,
                    None if timeout is None else now + timeout,
                    run_id,
                ),
            ).fetchone()
            run = run_from_row(claimed)
            return Lease(run_id=run_id, owner=owner, epoch=run.epoch), run

        return await self._write(tx)

    async def queue_heads(self, run_ids: Collection[str]) -> list[RunRecord]:
        found: dict[str, RunRecord] = {}
        ids = list(run_ids)
        for start in range(0, len(ids), 400):  # SQLite limits the number of parameters
            chunk = ids[start : start + 400]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"""
                SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({marks})
                UNION
                SELECT {RUN_COLUMNS} FROM runs r INDEXED BY runs_active_by_conversation
                WHERE r.conversation_id IN (SELECT conversation_id FROM runs WHERE id IN ({marks}))
                  AND r.status IN ('queued', 'running')
                  AND NOT EXISTS (
                    SELECT 1 FROM runs o INDEXED BY runs_active_by_conversation
                    WHERE o.conversation_id = r.conversation_id
                      AND o.status IN ('queued', 'running') AND o.position < r.position)
                """,
                (*chunk, *chunk),
            )
            for row in rows:
                record = run_from_row(row)
                found[record.id] = record
        return list(found.values())

    async def cancel_requested(self, run_ids: Collection[str]) -> list[str]:
        flagged: list[str] = []
        ids = list(run_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                f"SELECT id FROM runs WHERE id IN ({marks}) AND cancel_requested", tuple(chunk)
            )
            flagged += [r[0] for r in rows]
        return flagged

    async def orphan_candidates(
        self, *, now: float, owner_prefix: str, limit: int = 100
    ) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' "
            "AND (lease_expires_at IS NULL OR lease_expires_at < ? OR substr(owner, 1, ?) = ?) "
            "ORDER BY position LIMIT ?",
            (now, len(owner_prefix), owner_prefix, limit),
        )
        return [run_from_row(r) for r in rows]

    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        expected_epoch: int,
        lease_seconds: float,
        now: float,
        turn_timeout: float | None = None,
        limits: QueueLimits | None = None,
        dead_owner: str | None = None,
    ) -> Lease | None:
        deadline = None if turn_timeout is None else now + turn_timeout

        def tx(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(
                "SELECT status, epoch, conversation_id, position, agent, lease_expires_at, "
                "owner FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            status, epoch, conversation_id, position, agent, expires, current_owner = row
            if epoch != expected_epoch or status not in ("queued", "running"):
                return None
            if status == "running":
                # A takeover: only of a lease that expired, or of an owner proved dead.
                expired = expires is None or expires < now
                if not expired and (dead_owner is None or current_owner != dead_owner):
                    return None
            else:
                ahead = conn.execute(
                    "SELECT 1 FROM runs WHERE conversation_id = ? "
                    "AND status IN ('queued','running') AND position < ? LIMIT 1",
                    (conversation_id, position),
                ).fetchone()
                if ahead is not None:
                    return None
                # The IMMEDIATE transaction holds the write lock: no other process can
                # start a run between this count and the update below.
                if (
                    limits is not None
                    and limits.active
                    and not _within_limits(conn, limits, agent, now)
                ):
                    return None
            conn.execute(
                "UPDATE runs SET status = 'running', owner = ?, epoch = epoch + 1, "
                "lease_expires_at = ?, started_at = COALESCE(started_at, ?), "
                "deadline_at = COALESCE(deadline_at, ?) WHERE id = ?",
                (owner, now + lease_seconds, now, deadline, run_id),
            )
            return Lease(run_id=run_id, owner=owner, epoch=epoch + 1)

        return await self._write(tx)

    async def renew_lease(self, lease: Lease, *, lease_seconds: float, now: float) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            _fence(conn, lease, now + lease_seconds)
            row = conn.execute(
                "SELECT cancel_requested FROM runs WHERE id = ?", (lease.run_id,)
            ).fetchone()
            return bool(row[0])

        return await self._write(tx)

    async def renew_leases(
        self, leases: Sequence[Lease], *, lease_seconds: float, now: float
    ) -> dict[str, bool | None]:
        if not leases:
            return {}

        def tx(conn: sqlite3.Connection) -> dict[str, bool | None]:
            outcome: dict[str, bool | None] = {}
            for lease in leases:
                row = conn.execute(
                    "UPDATE runs SET lease_expires_at = ? "
                    "WHERE id = ? AND epoch = ? AND status = 'running' "
                    "RETURNING cancel_requested",
                    (now + lease_seconds, lease.run_id, lease.epoch),
                ).fetchone()
                outcome[lease.run_id] = None if row is None else bool(row[0])
            return outcome

        return await self._write(tx)

    async def release(self, lease: Lease) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            conn.execute(
                "UPDATE runs SET status = 'queued', owner = NULL, lease_expires_at = NULL "
                "WHERE id = ?",
                (lease.run_id,),
            )

        await self._write(tx)
        self._work_changed()

    async def request_cancel(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> RunRecord:
            row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise NotFound(f"run {run_id!r} not found")
            run = run_from_row(row)
            if run.status == "queued":
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', finished_at = ?, cancel_requested = 1, "
                    "error = ? WHERE id = ?",
                    (
                        now,
                        dumps({"type": "RunCancelled", "message": "cancelled before it started"}),
                        run_id,
                    ),
                )
                run.status, run.finished_at, run.cancel_requested = "cancelled", now, True
            elif run.status == "running":
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
                run.cancel_requested = True
            return run

        result = await self._write(tx)
        self._wake(run_id)
        self._work_changed()
        return result

    async def complete_run(self, lease: Lease, completion: RunCompletion, *, now: float) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            run_row = conn.execute(
                "SELECT conversation_id FROM runs WHERE id = ?", (lease.run_id,)
            ).fetchone()
            conversation_id = run_row[0]
            conn.execute(
                "UPDATE runs SET status = ?, result = ?, error = ?, finished_at = ?, "
                "lease_expires_at = NULL WHERE id = ?",
                (
                    completion.status,
                    dumps(completion.result),
                    dumps(completion.error),
                    now,
                    lease.run_id,
                ),
            )
            count = conn.execute(
                "SELECT message_count FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO messages (conversation_id, idx, run_id, body) VALUES (?,?,?,?)",
                [
                    (conversation_id, count + i, lease.run_id, dumps(m))
                    for i, m in enumerate(completion.new_messages)
                ],
            )
            conn.execute(
                "UPDATE conversations SET state = ?, version = version + 1, message_count = ?, "
                "updated_at = ?, expires_at = ? + ttl_seconds WHERE id = ?",
                (
                    completion.conversation_state,
                    count + len(completion.new_messages),
                    now,
                    now,
                    conversation_id,
                ),
            )
            if completion.steps:
                conn.executemany(_INSERT_STEP, [_step_row(st) for st in completion.steps])
            conn.executemany(_INSERT_EVENTS, _event_rows(completion.events))

        await self._write(tx)
        self._wake(lease.run_id)
        self._work_changed()

    # ---- journal ----------------------------------------------------------------------

    async def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        rows = await self._read(
            "SELECT run_id, seq, name, status, result, error, idempotency_key, started_at, "
            "finished_at, epoch FROM steps WHERE run_id = ?",
            (run_id,),
        )
        return {r[1]: StepRecord(*r) for r in rows}

    async def record_steps(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        events: list[EventRecord],
        *,
        lease_seconds: float,
        state: str | None = None,
    ) -> None:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease, now + lease_seconds, only_if_before=now + lease_seconds / 2)
            if steps:
                conn.executemany(_INSERT_STEP, [_step_row(step) for step in steps])
            if events:
                conn.executemany(_INSERT_EVENTS, _event_rows(events))
            if state is not None:
                _move_conversation(conn, lease, state)

        await self._write(tx)
        self._wake(lease.run_id)

    # ---- events -----------------------------------------------------------------------

    async def append_events(
        self, lease: Lease, events: list[EventRecord], *, state: str | None = None
    ) -> None:
        if not events and state is None:
            return

        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            conn.executemany(_INSERT_EVENTS, _event_rows(events))
            if state is not None:
                _move_conversation(conn, lease, state)

        await self._write(tx)
        self._wake(lease.run_id)

    async def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        check_limit(limit)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND seq > ? ORDER BY seq"
        # Mostly a stream asking for its next few events: try that on the loop, and only
        # when there are more, read them in a reader thread.
        inline = INLINE_ROWS if limit is None else min(limit, INLINE_ROWS)
        rows = await self._read(sql + " LIMIT ?", (run_id, after_seq, inline + 1))
        if len(rows) <= inline or inline == limit:
            return [event_from_row(r) for r in rows[:inline]]
        params = (run_id, after_seq, -1 if limit is None else limit)

        def read(conn: sqlite3.Connection) -> list[EventRecord]:
            return [event_from_row(r) for r in conn.execute(sql + " LIMIT ?", params)]

        return await self._read_large(read)

    async def read_events_of(self, run_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        ids = list(dict.fromkeys(run_ids))

        def read(conn: sqlite3.Connection) -> dict[str, list[EventRecord]]:
            rows: list[tuple[Any, ...]] = []
            for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
                chunk = ids[start : start + 500]
                rows += conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events "
                    f"WHERE run_id IN ({','.join('?' * len(chunk))}) ORDER BY run_id, seq",
                    chunk,
                ).fetchall()
            return events_by_run(ids, rows)

        return await self._read_large(read)

    async def last_event_seq(self, run_id: str) -> int:
        rows = await self._read(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
        )
        return int(rows[0][0])

    # ---- side effects -----------------------------------------------------------------

    async def record_effect(self, effect: EffectRecord) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO effects (idempotency_key, kind, run_id, conversation_id, tenant, "
                "payload, created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (
                    effect.idempotency_key,
                    effect.kind,
                    effect.run_id,
                    effect.conversation_id,
                    effect.tenant,
                    dumps(effect.payload),
                    effect.created_at,
                ),
            )
            return cur.rowcount == 1

        return await self._write(tx)

    async def list_effects(
        self, *, conversation_id: str | None = None, kind: str | None = None
    ) -> list[EffectRecord]:
        where, params = [], []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = (
            "SELECT idempotency_key, kind, run_id, conversation_id, tenant, payload, created_at "
            f"FROM effects {clause} ORDER BY created_at, idempotency_key"
        )
        rows = await self._read_large(lambda conn: conn.execute(sql, params).fetchall())
        return [
            EffectRecord(
                idempotency_key=r[0],
                kind=r[1],
                run_id=r[2],
                conversation_id=r[3],
                tenant=r[4],
                payload=loads(r[5]),
                created_at=r[6],
            )
            for r in rows
        ]

    # ---- retention --------------------------------------------------------------------

    async def purge_expired(self, *, now: float) -> PurgeReport:
        def tx(conn: sqlite3.Connection) -> PurgeReport:
            report = PurgeReport()
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM purge_ids")
            conn.execute(
                "INSERT INTO purge_ids SELECT id FROM conversations c WHERE c.expires_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.conversation_id = c.id "
                "AND r.status IN ('queued', 'running'))",
                (now,),
            )
            report.events = conn.execute(
                "DELETE FROM events WHERE run_id IN (SELECT id FROM runs WHERE conversation_id "
                "IN (SELECT id FROM purge_ids))"
            ).rowcount
            conn.execute(
                "DELETE FROM steps WHERE run_id IN (SELECT id FROM runs WHERE conversation_id "
                "IN (SELECT id FROM purge_ids))"
            )
            conn.execute(
                "DELETE FROM attempts WHERE run_id IN (SELECT id FROM runs WHERE conversation_id "
                "IN (SELECT id FROM purge_ids))"
            )
            report.runs = conn.execute(
                "DELETE FROM runs WHERE conversation_id IN (SELECT id FROM purge_ids)"
            ).rowcount
            conn.execute("DELETE FROM messages WHERE conversation_id IN (SELECT id FROM purge_ids)")
            conn.execute(
                "DELETE FROM summaries WHERE conversation_id IN (SELECT id FROM purge_ids)"
            )
            conn.execute("DELETE FROM effects WHERE conversation_id IN (SELECT id FROM purge_ids)")
            report.conversations = conn.execute(
                "DELETE FROM conversations WHERE id IN (SELECT id FROM purge_ids)"
            ).rowcount
            conn.execute("DELETE FROM purge_ids")
            return report

        return await self._write(tx)

    # ---- shared resilience state ------------------------------------------------------

    async def breaker_load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        rows = await self._read("SELECT state, version FROM breakers WHERE name = ?", (name,))
        if not rows:
            return None, 0
        return loads(rows[0][0]), int(rows[0][1])

    async def breaker_save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            if version == 0:
                cur = conn.execute(
                    "INSERT INTO breakers (name, state, version, updated_at) VALUES (?,?,1,?) "
                    "ON CONFLICT DO NOTHING",
                    (name, dumps(state), time.time()),
                )
            else:
                cur = conn.execute(
                    "UPDATE breakers SET state = ?, version = version + 1, updated_at = ? "
                    "WHERE name = ? AND version = ?",
                    (dumps(state), time.time(), name, version),
                )
            return cur.rowcount == 1

        return await self._write(tx)

    async def list_breakers(self) -> list[tuple[str, dict[str, Any], int]]:
        rows = await self._read("SELECT name, state, version FROM breakers ORDER BY name")
        return [(r[0], loads(r[1]), int(r[2])) for r in rows]

    # ---- journaled retry attempts -----------------------------------------------------

    async def load_attempt(self, run_id: str, seq: int) -> dict[str, Any] | None:
        rows = await self._read(
            "SELECT state FROM attempts WHERE run_id = ? AND seq = ?", (run_id, seq)
        )
        if not rows:
            return None
        state: dict[str, Any] = loads(rows[0][0])
        return state

    async def save_attempt(self, lease: Lease, seq: int, state: dict[str, Any]) -> None:
        text = dumps(state)

        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            conn.execute(
                "INSERT INTO attempts (run_id, seq, state, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT (run_id, seq) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (lease.run_id, seq, text, time.time()),
            )

        await self._write(tx)

    # ---- cached answers ---------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        rows = await self._read("SELECT value FROM response_cache WHERE key = ?", (key,))
        return loads(rows[0][0]) if rows else None

    async def cache_put(self, key: str, value: dict[str, Any]) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO response_cache (key, value, updated_at) VALUES (?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, dumps(value), time.time()),
            )

        await self._write(tx)

    async def cache_prune(self, *, older_than: float) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM response_cache WHERE updated_at < ?", (older_than,)
            ).rowcount

        return await self._write(tx)
