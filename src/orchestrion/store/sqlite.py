"""The embedded SQLite backend: one file, WAL, safe to share between processes.

Why synchronous sqlite3 calls on the event loop rather than a thread or aiosqlite: each
operation is one short transaction (tens of microseconds); a thread hop would cost more
than the work. Lock contention between processes is the exception, and it is waited out
asynchronously (see `_write`), so it never blocks the loop for long and never surfaces as
"database is locked".
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

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
    PurgeReport,
    QueueLimits,
    RunCompletion,
    RunRecord,
    StepRecord,
    Store,
)
from orchestrion.store.migrations import SQLITE_APPLICATION_ID, SQLITE_MIGRATIONS
from orchestrion.store.rows import (
    CONVERSATION_COLUMNS,
    EVENT_COLUMNS,
    RUN_COLUMNS,
    conversation_from_row,
    dumps,
    event_from_row,
    lease_lost,
    loads,
    run_from_row,
)

T = TypeVar("T")

SQLITE_MAGIC = b"SQLite format 3\x00"
# How long one attempt may block the event loop waiting for another process's lock.
_BLOCKING_BUSY_MS = 20


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    message = str(exc).lower()
    return "locked" in message or "busy" in message


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


_INSERT_EVENTS = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


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


def inspect_sqlite_file(path: Path) -> str:
    """Classify a store file without writing to it: "new", or "ours"; raise otherwise."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a store file. It was left untouched.")
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
        # Readers in this process waiting for a run's next events (see wait_for_events).
        self._event_waiters: dict[str, list[asyncio.Future[None]]] = {}

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
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {_BLOCKING_BUSY_MS}")
        self._conn = conn
        try:
            await self._write(self._migrate)
            await self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            sync = "NORMAL" if self.durability == "normal" else "FULL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            conn.close()
            self._conn = None
            raise

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

    async def close(self) -> None:
        if self._conn is not None:
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

    # ---- wake-ups -------------------------------------------------------------------

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
        rows = await self._read(
            "SELECT body FROM messages WHERE conversation_id = ? ORDER BY idx", (conversation_id,)
        )
        return [loads(r[0]) for r in rows]

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
    ) -> RunRecord:
        now = time.time()

        def tx(conn: sqlite3.Connection) -> RunRecord:
            owner_tenant = conn.execute(
                "SELECT tenant FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if owner_tenant is None or owner_tenant[0] != tenant:
                raise NotFound(f"conversation {conversation_id!r} not found")
            if busy_policy == "reject":
                active = conn.execute(
                    "SELECT id FROM runs WHERE conversation_id = ? "
                    "AND status IN ('queued','running') LIMIT 1",
                    (conversation_id,),
                ).fetchone()
                if active is not None:
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

        return await self._write(tx)

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows or (tenant is not None and rows[0][2] != tenant):
            raise NotFound(f"run {run_id!r} not found")
        return run_from_row(rows[0])

    async def list_runs(
        self, *, conversation_id: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        where, params = [], []
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY position DESC LIMIT ?",
            (*params, limit),
        )
        return [run_from_row(r) for r in rows]

    async def claimable_runs(self, *, now: float, limit: int = 20) -> list[RunRecord]:
        rows = await self._read(
            f"""
            SELECT {RUN_COLUMNS} FROM runs r
            WHERE r.status = 'running'
               OR (r.status = 'queued' AND NOT EXISTS (
                    SELECT 1 FROM runs o WHERE o.conversation_id = r.conversation_id
                    AND o.status IN ('queued', 'running') AND o.position < r.position))
            ORDER BY r.position LIMIT ?
            """,
            (limit,),
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
    ) -> Lease | None:
        deadline = None if turn_timeout is None else now + turn_timeout

        def tx(conn: sqlite3.Connection) -> Lease | None:
            row = conn.execute(
                "SELECT status, epoch, conversation_id, position, agent FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            status, epoch, conversation_id, position, agent = row
            if epoch != expected_epoch or status not in ("queued", "running"):
                return None
            if status == "queued":
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

    async def release(self, lease: Lease) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            conn.execute(
                "UPDATE runs SET status = 'queued', owner = NULL, lease_expires_at = NULL "
                "WHERE id = ?",
                (lease.run_id,),
            )

        await self._write(tx)

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
            conn.executemany(_INSERT_EVENTS, _event_rows(completion.events))

        await self._write(tx)
        self._wake(lease.run_id)

    # ---- journal ----------------------------------------------------------------------

    async def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        rows = await self._read(
            "SELECT run_id, seq, name, status, result, error, idempotency_key, started_at, "
            "finished_at, epoch FROM steps WHERE run_id = ?",
            (run_id,),
        )
        return {r[1]: StepRecord(*r) for r in rows}

    async def record_step(
        self, lease: Lease, step: StepRecord, events: list[EventRecord], *, lease_seconds: float
    ) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            _fence(
                conn,
                lease,
                step.finished_at + lease_seconds,
                only_if_before=step.finished_at + lease_seconds / 2,
            )
            conn.execute(
                "INSERT INTO steps (run_id, seq, name, status, result, error, idempotency_key, "
                "started_at, finished_at, epoch) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
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
                ),
            )
            if events:
                conn.executemany(_INSERT_EVENTS, _event_rows(events))

        await self._write(tx)
        self._wake(lease.run_id)

    # ---- events -----------------------------------------------------------------------

    async def append_events(self, lease: Lease, events: list[EventRecord]) -> None:
        if not events:
            return

        def tx(conn: sqlite3.Connection) -> None:
            _fence(conn, lease)
            conn.executemany(_INSERT_EVENTS, _event_rows(events))

        await self._write(tx)
        self._wake(lease.run_id)

    async def read_events(self, run_id: str, *, after_seq: int = 0) -> list[EventRecord]:
        rows = await self._read(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        )
        return [event_from_row(r) for r in rows]

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
        rows = await self._read(
            "SELECT idempotency_key, kind, run_id, conversation_id, tenant, payload, created_at "
            f"FROM effects {clause} ORDER BY created_at, idempotency_key",
            tuple(params),
        )
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
