"""The PostgreSQL backend: one database shared by a fleet of worker processes.

PostgreSQL is the coordination engine; there is no consensus of our own:

- Every operation is one transaction (most hot ones are one statement, so one round
  trip): fencing is a row lock plus an epoch check on the run inside that transaction, so
  a write of a worker whose lease was taken over is refused (LeaseLost), never applied.
- Claims take the run row with `FOR NO KEY UPDATE SKIP LOCKED`: workers racing for one
  run do not queue behind each other; the loser moves on to the next candidate.
- One active run per conversation: runs are queued while the conversation row is locked,
  so their positions commit in order, and a queued run is claimable only when nothing
  queued or running is ahead of it in its conversation.
- LISTEN/NOTIFY wakes idle workers when a run is queued, released or ends; polling stays
  as the fallback (a notification lost while the listener reconnects costs one poll).
- A dropped connection (server restart, `pg_terminate_backend`) is retried with backoff
  on a fresh connection for up to `reconnect_patience` seconds. A write interrupted by a
  dropped connection may or may not have committed; every write is idempotent or fenced,
  and the retry first checks whether the interrupted attempt landed (e.g. a step already
  recorded with identical content counts as success).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolClosed

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
    TurnState,
    check_limit,
)
from orchestrion.store.migrations import POSTGRES_MIGRATIONS
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
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

DEFAULT_SCHEMA = "orchestrion"
APPLICATION = "orchestrion"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")
# SQLSTATEs after which the transaction certainly rolled back and can simply run again.
_RETRY_STATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
# SQLSTATEs of a connection that went away (admin shutdown, crash, server starting up).
_GONE_STATES = {"57P01", "57P02", "57P03"}


def parse_postgres_url(url: str) -> tuple[str, str, str]:
    """(libpq conninfo without our own parameters, schema name, "host:port" for messages)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not _SCHEMA_NAME.match(schema):
        raise StoreError(
            f"invalid schema name {schema!r} in the store URL: use lowercase letters, digits "
            "and underscores (at most 50), starting with a letter or underscore"
        )
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    conninfo = urlunsplit((scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"invalid PostgreSQL URL {url!r}: {exc}") from None
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or 5432)
    return conninfo, schema, f"{host}:{port}"


_ACTIVE_RUN = ACTIVE_RUN_SQL.format(mark="%s")
_STEP_COLUMNS = (
    "run_id, seq, name, status, result, error, idempotency_key, started_at, finished_at, epoch"
)
# Events of any count in one statement: one array parameter per column.
_EVENTS_UNNEST = (
    "unnest(%(e_run)b::text[], %(e_seq)b::bigint[], %(e_type)b::text[], %(e_name)b::text[], "
    "%(e_trace)b::text[], %(e_span)b::text[], %(e_parent)b::text[], %(e_start)b::float8[], "
    "%(e_end)b::float8[], %(e_latency)b::float8[], %(e_status)b::text[], "
    "%(e_attributes)b::text[])"
)
_EVENTS_FROM = f"{_EVENTS_UNNEST} AS e({EVENT_COLUMNS})"
_STEPS_FROM = (
    "unnest(%(s_run)b::text[], %(s_seq)b::bigint[], %(s_name)b::text[], %(s_status)b::text[], "
    "%(s_result)b::text[], %(s_error)b::text[], %(s_key)b::text[], %(s_started)b::float8[], "
    "%(s_finished)b::float8[], %(s_epoch)b::bigint[]) AS s(" + _STEP_COLUMNS + ")"
)
_FENCE_LOCK = (
    "SELECT id FROM runs WHERE id = %(run_id)s AND epoch = %(epoch)s AND status = 'running' "
    "FOR NO KEY UPDATE"
)
_FENCE_LOCK_CONVERSATION = _FENCE_LOCK.replace("SELECT id", "SELECT id, conversation_id")


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _step_params(steps: Sequence[StepRecord]) -> dict[str, list[Any]]:
    return {
        "s_run": [st.run_id for st in steps],
        "s_seq": [int(st.seq) for st in steps],
        "s_name": [st.name for st in steps],
        "s_status": [st.status for st in steps],
        "s_result": [st.result for st in steps],
        "s_error": [st.error for st in steps],
        "s_key": [st.idempotency_key for st in steps],
        "s_started": [float(st.started_at) for st in steps],
        "s_finished": [float(st.finished_at) for st in steps],
        "s_epoch": [int(st.epoch) for st in steps],
    }


def _event_params(events: Iterable[EventRecord]) -> dict[str, list[Any]]:
    events = list(events)
    return {
        "e_run": [e.run_id for e in events],
        "e_seq": [int(e.seq) for e in events],
        "e_type": [e.type for e in events],
        "e_name": [e.name for e in events],
        "e_trace": [e.trace_id for e in events],
        "e_span": [e.span_id for e in events],
        "e_parent": [e.parent_span_id for e in events],
        "e_start": [float(e.start) for e in events],
        "e_end": [_opt_float(e.end) for e in events],
        "e_latency": [_opt_float(e.latency_ms) for e in events],
        "e_status": [e.status for e in events],
        "e_attributes": [dumps(e.attributes) for e in events],
    }


def _connection_gone(exc: psycopg.OperationalError) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _GONE_STATES


def connect_error_message(exc: BaseException, where: str, timeout: float) -> str:
    """One line naming why a connection failed, with advice that fits that cause."""
    text = " ".join(str(exc).split())
    fix = "fix --store (postgresql://user@host:port/db?schema=NAME)"
    if found := re.search(r'database "([^"]+)" does not exist', text):
        db = found.group(1)
        return (
            f"PostgreSQL at {where} has no database {db!r}: create it (`createdb {db}`, or "
            f"CREATE DATABASE {db}) or {fix}"
        )
    if found := re.search(r'role "([^"]+)" does not exist', text):
        role = found.group(1)
        return (
            f"PostgreSQL at {where} has no role {role!r}: connect as an existing user, or "
            f"create it (CREATE ROLE {role} LOGIN); {fix}"
        )
    if "authentication failed" in text or "no password supplied" in text:
        return (
            f"PostgreSQL at {where} refused the login ({text.rpartition('FATAL:')[2].strip()}):"
            " check the user and password in --store (postgresql://user:password@host/db), "
            "$PGPASSWORD or ~/.pgpass"
        )
    if "pg_hba.conf" in text:
        return (
            f"PostgreSQL at {where} does not accept this user, database and client address "
            "(no pg_hba.conf entry): allow it in pg_hba.conf, or connect as another user"
        )
    if "Connection refused" in text or "No such file or directory" in text:
        return (
            f"nothing is listening for PostgreSQL at {where} (connection refused): start "
            "the server (e.g. `pg_ctlcluster <version> main start`, `systemctl start "
            f"postgresql`) or {fix} if the host or port is wrong"
        )
    if "resolve host" in text or "translate host name" in text:
        return f"cannot find the PostgreSQL host of {where} (unknown host name): {fix}"
    if "timeout" in text.lower() or "timed out" in text:
        return (
            f"PostgreSQL at {where} did not answer within {timeout:g}s: check the host, the "
            f"port and any firewall in between, or {fix}"
        )
    return f"cannot connect to PostgreSQL at {where} ({text}): {fix}"


# How long the wake-up of a run nobody waits for any more is kept.
_WATCH_TTL = 60.0


class _Watch:
    """The readers of one run waiting in this process, and whether a notification came."""

    __slots__ = ("event", "last", "waiters")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiters = 0
        self.last = time.monotonic()


class PostgresStore(Store):
    """A store in one PostgreSQL schema. URL: postgresql://user@host:port/db?schema=NAME."""

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout: float = 5.0,
        reconnect_patience: float = 60.0,
        event_notifications: bool = True,
        create: bool = True,
    ) -> None:
        """`create=False`: opening raises NoStore when the schema holds no store yet."""
        self.url = url
        self.create = create
        self._conninfo, self.schema, self.where = parse_postgres_url(url)
        self.min_connections = min_connections
        self.max_connections = max(min_connections, max_connections)
        self.connect_timeout = connect_timeout
        self.reconnect_patience = reconnect_patience
        self.channel = f"orchestrion_{self.schema}"
        # NOTIFY payload: a run id, on every write that adds events to a run or ends it.
        # (At most 61 characters: channel names are cut at 63.)
        self.events_channel = f"orx_events_{self.schema}"
        self.event_notifications = event_notifications
        self.notifies_events = event_notifications
        # Named after the schema, so an operator can see (and end) a store's connections.
        self.application_name = f"orchestrion/{self.schema}"
        self._extra: dict[str, Any] = {}
        if "application_name" not in conninfo_to_dict(self._conninfo):
            self._extra["application_name"] = self.application_name
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._work: asyncio.Event | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listener_events = False  # whether the running listener LISTENs for events
        self._watched: dict[str, _Watch] = {}  # run id -> readers waiting in this process
        self._next_prune = 0.0

    # ---- lifecycle --------------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(connect_error_message(exc, self.where, self.connect_timeout))

    async def _connect(self) -> Conn:
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                **self._extra,
            )
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from None

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        try:
            await self._migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(
                f"PostgreSQL at {self.where}: cannot prepare the store: {exc}"
            ) from exc
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            min_size=self.min_connections,
            max_size=self.max_connections,
            kwargs={
                "autocommit": True,
                "options": f"-c search_path={self.schema}",
                **self._extra,
            },
            open=False,
            timeout=self.connect_timeout,
            name=f"orchestrion-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.OperationalError as exc:
            await pool.close()
            raise self._unreachable(exc) from None
        self._pool = pool
        self._work = asyncio.Event()

    async def _inspect(self, conn: Conn) -> int | None:
        """The store's version, or None for a missing or empty schema; raise if foreign."""
        cur = await conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')",
            (self.schema,),
        )
        names = {row[0] for row in await cur.fetchall()}
        if not names:
            return None
        refusal = NotAnOrchestrionStore(
            f"schema {self.schema!r} of the PostgreSQL database at {self.where} holds "
            f"{len(names)} tables that are not an orchestrion store. It was left untouched; "
            "choose another schema with ?schema=NAME in the store URL."
        )
        if "meta" not in names:
            raise refusal
        try:
            async with conn.transaction():  # a savepoint: a foreign `meta` must not abort us
                cur = await conn.execute(f'SELECT key, value FROM "{self.schema}".meta')
                meta = {str(k): str(v) for k, v in await cur.fetchall()}
        except psycopg.Error:
            raise refusal from None
        if meta.get("application") != APPLICATION or not meta.get("schema_version", "").isdigit():
            raise refusal
        version = int(meta["schema_version"])
        if version > len(POSTGRES_MIGRATIONS):
            raise SchemaTooNew(
                f"schema {self.schema!r} at {self.where} has orchestrion schema version "
                f"{version}, newer than this orchestrion supports ({len(POSTGRES_MIGRATIONS)}). "
                "It was left untouched; upgrade orchestrion to use it."
            )
        return version

    async def _migrate(self, conn: Conn) -> None:
        # A cheap look first, without any lock: refusals never wait for anyone.
        version = await self._inspect(conn)
        if version is None and not self.create:
            raise NoStore(
                f"no store in schema {self.schema!r} of the PostgreSQL database at "
                f"{self.where} (check the database and ?schema= in --store)"
            )
        if version == len(POSTGRES_MIGRATIONS):
            return
        schema = f'"{self.schema}"'
        async with conn.transaction():
            # Several processes may open a new store at once: one migrates, the others wait.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"orchestrion:{self.schema}",)
            )
            version = await self._inspect(conn)
            if version is None:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await conn.execute(
                    f"CREATE TABLE {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                await conn.execute(
                    f"INSERT INTO {schema}.meta (key, value) VALUES "
                    "('application', %s), ('schema_version', '0')",
                    (APPLICATION,),
                )
                version = 0
            await conn.execute(f"SET LOCAL search_path = {schema}")
            for number in range(version + 1, len(POSTGRES_MIGRATIONS) + 1):
                for statement in POSTGRES_MIGRATIONS[number - 1].split(";"):
                    code = "\n".join(
                        line for line in statement.splitlines() if not line.strip().startswith("--")
                    )
                    if code.strip():
                        await conn.execute(code.encode())
                await conn.execute(
                    "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(number),)
                )

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        self._listener_events = False
        self._wake_all()  # readers waiting on a closing store look at it (and fail) now
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError(
                "the store is not open (use `async with store:` or `await store.open()`)"
            )
        return self._pool

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0][0])

    # ---- transactions -----------------------------------------------------------------

    async def _tx(self, fn: Callable[[Conn, bool], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run `fn(conn, ambiguous)` in one transaction (or, with transaction=False, as the
        single autocommitted statement it issues), retrying what is safe to retry:

        - serialization failures and deadlocks (rolled back for certain);
        - a connection that went away (with backoff, for up to reconnect_patience). Then
          the attempt may have committed before the connection dropped: the next call
          gets `ambiguous=True` and must first check whether its write already landed.
        """
        deadline = time.monotonic() + self.reconnect_patience
        delay = 0.01
        ambiguous = False
        while True:
            pool = self.pool
            try:
                async with pool.connection() as conn:
                    if not transaction:
                        return await fn(conn, ambiguous)
                    async with conn.transaction():
                        return await fn(conn, ambiguous)
            except psycopg.errors.IntegrityError as exc:
                raise StoreConflict(f"PostgreSQL at {self.where}: write refused: {exc}") from exc
            except PoolClosed:
                raise StoreError("the store was closed while an operation was waiting") from None
            except psycopg.OperationalError as exc:
                if exc.sqlstate in _RETRY_STATES:
                    problem = "conflicting transactions"
                elif _connection_gone(exc):
                    problem = "the connection was lost"
                    ambiguous = True
                    with contextlib.suppress(Exception):
                        await pool.check()  # drop the other dead connections at once
                else:
                    raise StoreError(f"PostgreSQL at {self.where}: {exc}") from exc
                if time.monotonic() > deadline:
                    error = StoreBusy if problem == "conflicting transactions" else StoreError
                    raise error(
                        f"PostgreSQL at {self.where}: gave up after {self.reconnect_patience:.0f}s "
                        f"of retries ({problem}: {str(exc).strip()})"
                    ) from exc
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL at {self.where}: {exc}") from exc

    async def _fetch(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        async def go(conn: Conn, _ambiguous: bool) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

        return await self._tx(go, transaction=False)

    async def _fence(self, conn: Conn, lease: Lease) -> None:
        cur = await conn.execute(_FENCE_LOCK, {"run_id": lease.run_id, "epoch": lease.epoch})
        if await cur.fetchone() is None:
            raise lease_lost(lease)

    async def _insert_events(self, conn: Conn, events: list[EventRecord]) -> None:
        if events:
            await conn.execute(
                f"INSERT INTO events ({EVENT_COLUMNS}) SELECT * FROM {_EVENTS_FROM}",
                _event_params(events),
            )

    async def _notify(self, conn: Conn) -> None:
        """Delivered to every listener when the surrounding transaction commits."""
        await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    async def _notify_events(self, conn: Conn, run_id: str) -> None:
        """Wake the readers of `run_id` (in every process) when the transaction commits."""
        if self.event_notifications:
            await conn.execute("SELECT pg_notify(%s, %s)", (self.events_channel, run_id))

    def _events_notify_sql(self, run_param: str) -> str:
        """A select-list item sending the events notification within one statement."""
        if not self.event_notifications:
            return "NULL"
        return f"pg_notify(%(events_channel)s, %({run_param})s)"

    # ---- wake-ups ---------------------------------------------------------------------

    def _wake_all(self) -> None:
        if self._work is not None:
            self._work.set()
        for watch in self._watched.values():
            watch.event.set()

    async def _listen(self, events: bool) -> None:
        """Keep one LISTEN connection for this store object: work notifications wake
        `wait_for_work`, events notifications (LISTENed once a reader waits) wake the
        readers of that run in `wait_for_events`. Every (re)connect wakes everyone, since
        notifications may have been missed meanwhile."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5, **self._extra
                )
                async with conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    if events:
                        await conn.execute(f'LISTEN "{self.events_channel}"')
                    delay = 0.1
                    self._wake_all()
                    async for note in conn.notifies():
                        if note.channel == self.channel:
                            if self._work is not None:
                                self._work.set()
                        else:
                            watch = self._watched.get(note.payload)
                            if watch is not None:
                                watch.event.set()
            except psycopg.Error:
                pass
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)

    async def _ensure_listener(self, *, events: bool) -> None:
        listener = self._listener
        running = listener is not None and not listener.done()
        if running and (self._listener_events or not events):
            return
        # Replace it before awaiting anything, so concurrent callers see the new one.
        self._listener_events = events or self._listener_events
        self._listener = asyncio.create_task(
            self._listen(self._listener_events), name="orchestrion-listen"
        )
        if running and listener is not None:
            # The first reader: the old listener did not LISTEN for events (once per
            # store object); the new one does, and wakes everyone when it is connected.
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        work = self._work
        if self._pool is None or work is None:
            await asyncio.sleep(timeout)
            return
        await self._ensure_listener(events=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(work.wait(), timeout)
        work.clear()

    async def wait_for_events(self, run_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return when a NOTIFY says the run has new events or changed (or the listener
        reconnected), or after `timeout` seconds: polling stays the fallback.

        A notification that arrives between a reader's read and its next wait is kept
        (per run, while some reader of it waited here in the last minute), so that wait
        returns at once instead of sleeping through it."""
        if self._pool is None or not self.event_notifications:
            await asyncio.sleep(timeout)
            return
        await self._ensure_listener(events=True)
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + _WATCH_TTL
            for rid, old in list(self._watched.items()):
                if not old.waiters and now - old.last > _WATCH_TTL:
                    del self._watched[rid]
        watch = self._watched.get(run_id)
        if watch is None:
            watch = self._watched[run_id] = _Watch()
        elif watch.event.is_set() and not watch.waiters:
            watch.event.clear()  # notified since the last wait ended: look now
            watch.last = now
            return
        watch.waiters += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.event.wait(), timeout)
        finally:
            watch.waiters -= 1
            watch.last = time.monotonic()
            if not watch.waiters:
                watch.event.clear()

    async def notify_work(self) -> None:
        async def go(conn: Conn, _ambiguous: bool) -> None:
            await self._notify(conn)

        await self._tx(go, transaction=False)

    # ---- conversations ----------------------------------------------------------------

    async def ensure_conversation(
        self, conversation_id: str, *, tenant: str, agent: str, ttl_seconds: float, state: str
    ) -> ConversationRecord:
        now = time.time()

        async def tx(conn: Conn, _ambiguous: bool) -> ConversationRecord:
            await conn.execute(
                "INSERT INTO conversations (id, tenant, agent, state, ttl_seconds, created_at, "
                "updated_at, expires_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO NOTHING",
                (conversation_id, tenant, agent, state, ttl_seconds, now, now, now + ttl_seconds),
            )
            cur = await conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s",
                (conversation_id,),
            )
            row = await cur.fetchone()
            if row is None:  # purged between the two statements
                raise psycopg.errors.SerializationFailure("conversation vanished; retry")
            record = conversation_from_row(row)
            if record.tenant != tenant:
                raise NotFound(f"conversation {conversation_id!r} not found")
            return record

        return await self._tx(tx)

    async def get_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> ConversationRecord:
        rows = await self._fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s", (conversation_id,)
        )
        if not rows or (tenant is not None and rows[0][1] != tenant):
            raise NotFound(f"conversation {conversation_id!r} not found")
        return conversation_from_row(rows[0])

    async def history(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT body FROM messages WHERE conversation_id = %s ORDER BY idx",
            (conversation_id,),
        )
        return [loads(r[0]) for r in rows]

    async def history_page(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None,
    ) -> list[MessageRecord]:
        sql, params, backward = history_query(
            conversation_id, mark="%s", after=after, before=before, limit=limit
        )
        return messages_from_rows(await self._fetch(sql, params), reverse=backward)

    async def history_tail(
        self,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> list[MessageRecord]:
        sql, params, backward = history_query(
            conversation_id, mark="%s", after=after, before=before, limit=limit, newest=True
        )
        return messages_from_rows(await self._fetch(sql, params), reverse=backward)

    # ---- context summaries ------------------------------------------------------------

    async def load_summaries(self, conversation_id: str) -> list[SummaryRecord]:
        rows = await self._fetch(
            f"SELECT {SUMMARY_COLUMNS} FROM summaries WHERE conversation_id = %s "
            "ORDER BY last_idx DESC",
            (conversation_id,),
        )
        return [summary_from_row(r) for r in rows]

    async def save_summary(
        self, lease: Lease, summary: SummaryRecord, *, drop: tuple[int, int] | None = None
    ) -> SummaryRecord:
        cid, run_id = summary.conversation_id, summary.run_id
        marks = ", ".join(["%s"] * 10)

        # Idempotent as a whole (the insert does nothing the second time, and then drops
        # nothing), so a retry after a dropped connection needs no special check.
        async def tx(conn: Conn, _ambiguous: bool) -> SummaryRecord:
            cur = await conn.execute(
                _FENCE_LOCK_CONVERSATION, {"run_id": lease.run_id, "epoch": lease.epoch}
            )
            fenced = await cur.fetchone()
            if fenced is None:
                raise lease_lost(lease)
            if run_id != lease.run_id or fenced[1] != cid:
                raise ValueError(
                    f"run {lease.run_id} cannot store a summary of run {run_id} of "
                    f"conversation {cid!r}: only of its own conversation"
                )
            cur = await conn.execute(
                f"INSERT INTO summaries ({SUMMARY_COLUMNS}) VALUES ({marks}) "
                "ON CONFLICT DO NOTHING",
                summary_params(summary),
            )
            inserted = cur.rowcount
            cur = await conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM summaries "
                "WHERE conversation_id = %s AND run_id = %s AND label = %s",
                (cid, run_id, summary.label),
            )
            stored = await cur.fetchone()
            assert stored is not None
            await conn.execute(
                "DELETE FROM summaries WHERE conversation_id = %(c)s AND run_id <> %(r)s "
                "AND last_idx < (SELECT max(last_idx) FROM summaries "
                "WHERE conversation_id = %(c)s AND run_id <> %(r)s)",
                {"c": cid, "r": run_id},
            )
            if inserted and drop is not None:
                await conn.execute(
                    "DELETE FROM messages WHERE conversation_id = %s AND idx >= %s AND idx <= %s",
                    (cid, drop[0], drop[1]),
                )
            return summary_from_row(stored)

        return await self._tx(tx)

    async def set_conversation_state(
        self,
        lease: Lease,
        conversation_id: str,
        expected: str,
        new: str,
        events: list[EventRecord],
    ) -> None:
        async def tx(conn: Conn, ambiguous: bool) -> None:
            await self._fence(conn, lease)
            cur = await conn.execute(
                "UPDATE conversations SET state = %s, updated_at = %s WHERE id = %s AND state = %s",
                (new, time.time(), conversation_id, expected),
            )
            if cur.rowcount != 1:
                if ambiguous and events and await self._events_exist(conn, events):
                    return  # the interrupted attempt committed
                raise StoreConflict(
                    f"conversation {conversation_id!r} is no longer in state {expected} "
                    "(changed concurrently)"
                )
            await self._insert_events(conn, events)
            if events:
                await self._notify_events(conn, lease.run_id)

        await self._tx(tx)

    async def _events_exist(self, conn: Conn, events: list[EventRecord]) -> bool:
        cur = await conn.execute(
            "SELECT count(*) FROM events WHERE run_id = %s AND seq = ANY(%s) AND type = ANY(%s)",
            (events[0].run_id, [e.seq for e in events], [e.type for e in events]),
        )
        row = await cur.fetchone()
        return row is not None and int(row[0]) == len(events)

    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None, now: float
    ) -> ConversationRecord:
        async def tx(conn: Conn, _ambiguous: bool) -> ConversationRecord:
            # The row lock orders this with create_run (which takes it too): no run can
            # be queued between the check for an active run and the close.
            cur = await conn.execute(
                "SELECT tenant, state FROM conversations WHERE id = %s FOR NO KEY UPDATE",
                (conversation_id,),
            )
            found = await cur.fetchone()
            if found is None or (tenant is not None and found[0] != tenant):
                raise NotFound(f"conversation {conversation_id!r} not found")
            if found[1] != CLOSED_STATE:
                cur = await conn.execute(_ACTIVE_RUN, (conversation_id,))
                active = await cur.fetchone()
                if active is not None:
                    raise close_refused(conversation_id, active[0])
                await conn.execute(
                    "UPDATE conversations SET state = %s, updated_at = %s WHERE id = %s",
                    (CLOSED_STATE, now, conversation_id),
                )
            cur = await conn.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = %s",
                (conversation_id,),
            )
            row = await cur.fetchone()
            assert row is not None
            return conversation_from_row(row)

        return await self._tx(tx)

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

        params: dict[str, Any] = {
            "run": run_id,
            "cid": conversation_id,
            "tenant": tenant,
            "agent": agent,
            "input": dumps(input),
            "trace": trace_id,
            "deadline": deadline_at,
            "now": now,
            "reject": busy_policy == "reject",
            "closed": CLOSED_STATE,
            "channel": self.channel,
            **_event_params([event]),
        }

        async def go(conn: Conn, ambiguous: bool) -> RunRecord:
            if ambiguous:
                cur = await conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
                row = await cur.fetchone()
                if row is not None and row[1] == conversation_id:
                    return run_from_row(row)  # the interrupted attempt committed
            # One round trip: the statements are pipelined in one transaction, and each
            # checks what it depends on in SQL (the answer is read once it committed).
            async with conn.pipeline(), conn.transaction():
                if new_conversation is not None:
                    ttl = new_conversation.ttl_seconds
                    await conn.execute(
                        "INSERT INTO conversations (id, tenant, agent, state, ttl_seconds, "
                        "created_at, updated_at, expires_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT (id) DO NOTHING",
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
                # The conversation row lock orders the runs of one conversation: their
                # positions are taken (and committed) one after another.
                await conn.execute(
                    "SELECT 1 FROM conversations WHERE id = %s FOR NO KEY UPDATE",
                    (conversation_id,),
                )
                inserted = await conn.execute(
                    "INSERT INTO runs (id, conversation_id, tenant, agent, status, input, "
                    "trace_id, deadline_at, position, created_at) "
                    "SELECT %(run)s, %(cid)s, %(tenant)s, %(agent)s, 'queued', %(input)s, "
                    "%(trace)s, %(deadline)s, nextval('run_positions'), %(now)s "
                    "FROM conversations c WHERE c.id = %(cid)s AND c.tenant = %(tenant)s "
                    "AND c.state <> %(closed)s "
                    # idle past its expiry: EXPIRED (a turn in flight keeps it alive)
                    "AND (c.expires_at >= %(now)s OR EXISTS (SELECT 1 FROM runs "
                    "WHERE conversation_id = %(cid)s AND status IN ('queued', 'running'))) "
                    "AND (NOT %(reject)s OR NOT EXISTS (SELECT 1 FROM runs "
                    "WHERE conversation_id = %(cid)s AND status IN ('queued', 'running'))) "
                    "RETURNING position",
                    params,
                )
                await conn.execute(
                    f"INSERT INTO events ({EVENT_COLUMNS}) SELECT e.* FROM {_EVENTS_FROM} "
                    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = %(run)s)",
                    params,
                )
                await conn.execute(
                    "SELECT pg_notify(%(channel)s, '') "
                    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = %(run)s)",
                    params,
                )
            position_row = await inserted.fetchone()
            if position_row is None:  # refused: say why
                cur = await conn.execute(
                    "SELECT c.tenant, c.state, c.expires_at, (SELECT r.id FROM runs r "
                    "WHERE r.conversation_id = c.id AND r.status IN ('queued', 'running') "
                    "LIMIT 1) FROM conversations c WHERE c.id = %s",
                    (conversation_id,),
                )
                found = await cur.fetchone()
                if found is None or found[0] != tenant:
                    raise NotFound(f"conversation {conversation_id!r} not found")
                if found[1] == CLOSED_STATE:
                    raise conversation_closed(conversation_id)
                if found[3] is None and found[2] < now:
                    raise conversation_expired(conversation_id, found[2])
                raise ConversationBusy(
                    f"conversation {conversation_id!r} already has an active run ({found[3]})"
                )
            return RunRecord(
                id=run_id,
                conversation_id=conversation_id,
                tenant=tenant,
                agent=agent,
                status="queued",
                input=input,
                trace_id=trace_id,
                created_at=now,
                position=int(position_row[0]),
                deadline_at=deadline_at,
            )

        return await self._tx(go, transaction=False)

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        rows = await self._fetch(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
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
            mark="%s",
            conversation_id=conversation_id,
            tenant=tenant,
            limit=limit,
            before_position=before_position,
            after_position=after_position,
            status=status,
            agent=agent,
            oldest_first=oldest_first,
        )
        return [run_from_row(r) for r in await self._fetch(sql, params)]

    async def next_claimable(
        self,
        *,
        agents: Collection[str],
        limits: Sequence[QueueLimits] = (),
        limit: int = 20,
    ) -> list[RunRecord]:
        if not agents:
            return []
        full: list[str] = []
        if limits:
            now = time.time()
            rows = await self._fetch(
                "SELECT q.queue, (SELECT count(*) FROM runs r WHERE r.status = 'running' "
                "AND r.agent = q.queue), b.tokens, b.updated_at "
                "FROM unnest(%s::text[]) AS q(queue) LEFT JOIN queue_limits b ON b.queue = q.queue",
                ([q.queue for q in limits],),
            )
            by_queue = {q.queue: q for q in limits}
            for queue, running, tokens, updated_at in rows:
                q = by_queue[queue]
                bucket = None if tokens is None else (tokens, updated_at)
                if (q.max_running is not None and int(running) >= q.max_running) or (
                    q.max_per_second is not None and q.take_token(bucket, now) is None
                ):
                    full.append(queue)
        wanted = [a for a in agents if a not in full]
        if not wanted:
            return []
        rows = await self._fetch(
            f"""
            SELECT {RUN_COLUMNS} FROM runs r
            WHERE r.status = 'queued' AND r.agent = ANY(%s)
              AND NOT EXISTS (
                SELECT 1 FROM runs o WHERE o.conversation_id = r.conversation_id
                AND o.status IN ('queued', 'running') AND o.position < r.position)
            ORDER BY r.position LIMIT %s
            """,
            (wanted, limit),
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
        if not turn_timeouts:
            return None
        params = {
            "agents": list(turn_timeouts),
            "timeouts": [None if t is None else float(t) for t in turn_timeouts.values()],
            "owner": owner,
            "until": now + lease_seconds,
            "now": now,
        }
        # The classic SKIP LOCKED dequeue, in one statement: a run another claimer has
        # locked is skipped, so concurrent workers take different runs.
        sql = f"""
            WITH t AS (
                SELECT * FROM unnest(%(agents)s::text[], %(timeouts)s::float8[])
                    AS t(agent, timeout)
            ), target AS (
                SELECT r.id, t.timeout FROM runs r JOIN t ON t.agent = r.agent
                WHERE r.status = 'queued' AND NOT EXISTS (
                    SELECT 1 FROM runs o WHERE o.conversation_id = r.conversation_id
                    AND o.status IN ('queued', 'running') AND o.position < r.position)
                ORDER BY r.position LIMIT 1
                FOR NO KEY UPDATE OF r SKIP LOCKED
            )
            UPDATE runs SET status = 'running', owner = %(owner)s, epoch = epoch + 1,
                lease_expires_at = %(until)s, started_at = COALESCE(started_at, %(now)s),
                deadline_at = COALESCE(deadline_at, %(now)s + target.timeout)
            FROM target WHERE runs.id = target.id
            RETURNING {_prefixed("runs", RUN_COLUMNS)}
        """

        async def go(conn: Conn, ambiguous: bool) -> tuple[Lease, RunRecord] | None:
            if ambiguous:
                # An interrupted dequeue may have claimed a run for us: take it back.
                cur = await conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND owner = %s "
                    "AND lease_expires_at = %s ORDER BY position LIMIT 1",
                    (owner, now + lease_seconds),
                )
                row = await cur.fetchone()
                if row is not None:
                    run = run_from_row(row)
                    return Lease(run_id=run.id, owner=owner, epoch=run.epoch), run
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None:
                return None
            run = run_from_row(row)
            return Lease(run_id=run.id, owner=owner, epoch=run.epoch), run

        return await self._tx(go, transaction=False)

    async def queue_heads(self, run_ids: Collection[str]) -> list[RunRecord]:
        ids = list(run_ids)
        if not ids:
            return []
        rows = await self._fetch(
            f"""
            SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY(%(ids)s)
            UNION
            SELECT {RUN_COLUMNS} FROM runs r
            WHERE r.conversation_id IN (SELECT conversation_id FROM runs WHERE id = ANY(%(ids)s))
              AND r.status IN ('queued', 'running')
              AND NOT EXISTS (
                SELECT 1 FROM runs o WHERE o.conversation_id = r.conversation_id
                AND o.status IN ('queued', 'running') AND o.position < r.position)
            """,
            {"ids": ids},
        )
        return [run_from_row(r) for r in rows]

    async def cancel_requested(self, run_ids: Collection[str]) -> list[str]:
        ids = list(run_ids)
        if not ids:
            return []
        rows = await self._fetch(
            "SELECT id FROM runs WHERE id = ANY(%s) AND cancel_requested", (ids,)
        )
        return [str(r[0]) for r in rows]

    async def orphan_candidates(
        self, *, now: float, owner_prefix: str, limit: int = 100
    ) -> list[RunRecord]:
        rows = await self._fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' "
            "AND (lease_expires_at IS NULL OR lease_expires_at < %s "
            "OR left(owner, %s) = %s) ORDER BY position LIMIT %s",
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
        if limits is None or not limits.active:
            return await self._claim_unlimited(
                run_id, owner, expected_epoch, now + lease_seconds, now, deadline, dead_owner
            )

        async def tx(conn: Conn, ambiguous: bool) -> Lease | None:
            if ambiguous:
                cur = await conn.execute(
                    "SELECT status, epoch, owner FROM runs WHERE id = %s", (run_id,)
                )
                row = await cur.fetchone()
                if row is not None and row == ("running", expected_epoch + 1, owner):
                    return Lease(run_id=run_id, owner=owner, epoch=expected_epoch + 1)
            # SKIP LOCKED: a run another worker is claiming (or writing to) right now is
            # not waited for; this claim simply loses.
            cur = await conn.execute(
                "SELECT status, epoch, conversation_id, position, agent, lease_expires_at, "
                "owner FROM runs WHERE id = %s FOR NO KEY UPDATE SKIP LOCKED",
                (run_id,),
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute("SELECT 1 FROM runs WHERE id = %s", (run_id,))
                if await cur.fetchone() is None:
                    raise NotFound(f"run {run_id!r} not found")
                return None
            status, epoch, conversation_id, position, agent, expires, current_owner = row
            if epoch != expected_epoch or status not in ("queued", "running"):
                return None
            if status == "running":
                # A takeover: only of a lease that expired, or of an owner proved dead.
                expired = expires is None or expires < now
                if not expired and (dead_owner is None or current_owner != dead_owner):
                    return None
            else:
                cur = await conn.execute(
                    "SELECT 1 FROM runs WHERE conversation_id = %s "
                    "AND status IN ('queued','running') AND position < %s LIMIT 1",
                    (conversation_id, position),
                )
                if await cur.fetchone() is not None:
                    return None
                if (
                    limits is not None
                    and limits.active
                    and not await self._within_limits(conn, limits, agent, now)
                ):
                    return None
            await conn.execute(
                "UPDATE runs SET status = 'running', owner = %s, epoch = epoch + 1, "
                "lease_expires_at = %s, started_at = COALESCE(started_at, %s), "
                "deadline_at = COALESCE(deadline_at, %s) WHERE id = %s",
                (owner, now + lease_seconds, now, deadline, run_id),
            )
            return Lease(run_id=run_id, owner=owner, epoch=epoch + 1)

        return await self._tx(tx)

    async def _claim_unlimited(
        self,
        run_id: str,
        owner: str,
        expected_epoch: int,
        until: float,
        now: float,
        deadline: float | None,
        dead_owner: str | None,
    ) -> Lease | None:
        """A claim without queue limits in one statement (one round trip): the same
        checks as the limited claim, with the run row locked SKIP LOCKED."""
        params = {
            "id": run_id,
            "expected": expected_epoch,
            "owner": owner,
            "until": until,
            "now": now,
            "deadline": deadline,
            "dead": dead_owner,
        }
        sql = """
            WITH target AS (
                SELECT r.id FROM runs r
                WHERE r.id = %(id)s AND r.epoch = %(expected)s AND (
                    (r.status = 'queued' AND NOT EXISTS (
                        SELECT 1 FROM runs o WHERE o.conversation_id = r.conversation_id
                        AND o.status IN ('queued', 'running') AND o.position < r.position))
                    OR (r.status = 'running' AND (r.lease_expires_at IS NULL
                        OR r.lease_expires_at < %(now)s OR r.owner = %(dead)s)))
                FOR NO KEY UPDATE SKIP LOCKED
            )
            UPDATE runs SET status = 'running', owner = %(owner)s, epoch = epoch + 1,
                lease_expires_at = %(until)s, started_at = COALESCE(started_at, %(now)s),
                deadline_at = COALESCE(deadline_at, %(deadline)s)
            FROM target WHERE runs.id = target.id RETURNING runs.epoch
        """

        async def go(conn: Conn, ambiguous: bool) -> Lease | None:
            if ambiguous:
                cur = await conn.execute(
                    "SELECT status, epoch, owner FROM runs WHERE id = %s", (run_id,)
                )
                if await cur.fetchone() == ("running", expected_epoch + 1, owner):
                    return Lease(run_id=run_id, owner=owner, epoch=expected_epoch + 1)
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is not None:
                return Lease(run_id=run_id, owner=owner, epoch=int(row[0]))
            cur = await conn.execute("SELECT 1 FROM runs WHERE id = %s", (run_id,))
            if await cur.fetchone() is None:
                raise NotFound(f"run {run_id!r} not found")
            return None

        return await self._tx(go, transaction=False)

    async def _within_limits(self, conn: Conn, limits: QueueLimits, agent: str, now: float) -> bool:
        """Whether a run of queue `agent` may start now (takes a token when it may).

        Claims of one queue are serialised by a transaction-scoped advisory lock on
        (schema, queue), taken after the run row's lock: the count below then sees every
        start committed before it, and no other start of the queue commits until this
        transaction ends. Other queues, and takeovers, are never blocked by it."""
        if limits.queue != agent:
            raise ValueError(f"limits of queue {limits.queue!r} given for a run of queue {agent!r}")
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
            (f"orchestrion-queue:{self.schema}", agent),
        )
        if limits.max_running is not None:
            cur = await conn.execute(
                "SELECT count(*) FROM runs WHERE status = 'running' AND agent = %s", (agent,)
            )
            running = await cur.fetchone()
            if running is not None and int(running[0]) >= limits.max_running:
                return False
        if limits.max_per_second is not None:
            cur = await conn.execute(
                "SELECT tokens, updated_at FROM queue_limits WHERE queue = %s", (agent,)
            )
            bucket = await cur.fetchone()
            left = limits.take_token(bucket, now)
            if left is None:
                return False
            await conn.execute(
                "INSERT INTO queue_limits (queue, tokens, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (queue) DO UPDATE SET tokens = excluded.tokens, "
                "updated_at = GREATEST(queue_limits.updated_at, excluded.updated_at)",
                (agent, left, now),
            )
        return True

    async def renew_lease(self, lease: Lease, *, lease_seconds: float, now: float) -> bool:
        async def go(conn: Conn, _ambiguous: bool) -> bool:
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at = %s "
                "WHERE id = %s AND epoch = %s AND status = 'running' RETURNING cancel_requested",
                (now + lease_seconds, lease.run_id, lease.epoch),
            )
            row = await cur.fetchone()
            if row is None:
                raise lease_lost(lease)
            return bool(row[0])

        return await self._tx(go, transaction=False)

    async def renew_leases(
        self, leases: Sequence[Lease], *, lease_seconds: float, now: float
    ) -> dict[str, bool | None]:
        if not leases:
            return {}

        async def go(conn: Conn, _ambiguous: bool) -> dict[str, bool | None]:
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at = %s FROM unnest(%s::text[], %s::bigint[]) "
                "AS l(id, epoch) WHERE runs.id = l.id AND runs.epoch = l.epoch "
                "AND runs.status = 'running' RETURNING runs.id, runs.cancel_requested",
                (now + lease_seconds, [x.run_id for x in leases], [x.epoch for x in leases]),
            )
            renewed = {str(r[0]): bool(r[1]) for r in await cur.fetchall()}
            return {x.run_id: renewed.get(x.run_id) for x in leases}

        return await self._tx(go, transaction=False)

    async def release(self, lease: Lease) -> None:
        async def go(conn: Conn, ambiguous: bool) -> None:
            cur = await conn.execute(
                "WITH released AS (UPDATE runs SET status = 'queued', owner = NULL, "
                "lease_expires_at = NULL WHERE id = %s AND epoch = %s AND status = 'running' "
                "RETURNING id) SELECT (SELECT count(*) FROM released), pg_notify(%s, '')",
                (lease.run_id, lease.epoch, self.channel),
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) == 1:
                return
            if ambiguous:
                cur = await conn.execute(
                    "SELECT 1 FROM runs WHERE id = %s AND epoch = %s AND status = 'queued'",
                    (lease.run_id, lease.epoch),
                )
                if await cur.fetchone() is not None:
                    return  # the interrupted attempt committed
            raise lease_lost(lease)

        await self._tx(go, transaction=False)

    async def request_cancel(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        now = time.time()

        async def tx(conn: Conn, _ambiguous: bool) -> RunRecord:
            cur = await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s FOR NO KEY UPDATE", (run_id,)
            )
            row = await cur.fetchone()
            if row is None or (tenant is not None and row[2] != tenant):
                raise NotFound(f"run {run_id!r} not found")
            run = run_from_row(row)
            if run.status == "queued":
                await conn.execute(
                    "UPDATE runs SET status = 'cancelled', finished_at = %s, "
                    "cancel_requested = TRUE, error = %s WHERE id = %s",
                    (
                        now,
                        dumps({"type": "RunCancelled", "message": "cancelled before it started"}),
                        run_id,
                    ),
                )
                await self._notify(conn)  # the run behind it may now be claimable
                run.status, run.finished_at, run.cancel_requested = "cancelled", now, True
            elif run.status == "running":
                await conn.execute(
                    "UPDATE runs SET cancel_requested = TRUE WHERE id = %s", (run_id,)
                )
                run.cancel_requested = True
            await self._notify_events(conn, run_id)
            return run

        return await self._tx(tx)

    async def complete_run(self, lease: Lease, completion: RunCompletion, *, now: float) -> None:
        added = len(completion.new_messages)
        params: dict[str, Any] = {
            "status": completion.status,
            "result": dumps(completion.result),
            "error": dumps(completion.error),
            "now": now,
            "run_id": lease.run_id,
            "epoch": lease.epoch,
            "state": completion.conversation_state,
            "added": added,
            "bodies": [dumps(m) for m in completion.new_messages],
            "channel": self.channel,
            "events_channel": self.events_channel,
            **_step_params(completion.steps),
            **_event_params(completion.events),
        }
        # One statement, one round trip: the run ends (fenced; its conversation must still
        # exist), the conversation moves on, the history grows, the last steps and events
        # land; then the waiting workers and readers are told.
        sql = f"""
            WITH done AS (
                UPDATE runs SET status = %(status)s, result = %(result)s, error = %(error)s,
                    finished_at = %(now)s, lease_expires_at = NULL
                WHERE id = %(run_id)s AND epoch = %(epoch)s AND status = 'running'
                  AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = runs.conversation_id)
                RETURNING conversation_id
            ), conv AS (
                UPDATE conversations c SET state = %(state)s, version = version + 1,
                    message_count = message_count + %(added)s, updated_at = %(now)s,
                    expires_at = %(now)s + ttl_seconds
                FROM done WHERE c.id = done.conversation_id
                RETURNING c.id, c.message_count - %(added)s AS base
            ), msgs AS (
                INSERT INTO messages (conversation_id, idx, run_id, body)
                SELECT conv.id, conv.base + m.ord - 1, %(run_id)s, m.body
                FROM conv, unnest(%(bodies)b::text[]) WITH ORDINALITY AS m(body, ord)
            ), st AS (
                INSERT INTO steps ({_STEP_COLUMNS}) SELECT s.* FROM done, {_STEPS_FROM}
            ), ev AS (
                INSERT INTO events ({EVENT_COLUMNS}) SELECT e.* FROM done, {_EVENTS_FROM}
            )
            SELECT (SELECT count(*) FROM done), pg_notify(%(channel)s, ''),
                   {self._events_notify_sql("run_id")}
        """

        async def go(conn: Conn, ambiguous: bool) -> None:
            if ambiguous:
                cur = await conn.execute(
                    "SELECT status, epoch FROM runs WHERE id = %s", (lease.run_id,)
                )
                if await cur.fetchone() == (completion.status, lease.epoch):
                    return  # the interrupted attempt committed
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is not None and int(row[0]) == 1:
                return
            cur = await conn.execute(
                "SELECT 1 FROM runs WHERE id = %s AND epoch = %s AND status = 'running'",
                (lease.run_id, lease.epoch),
            )
            if await cur.fetchone() is not None:
                raise StoreConflict(f"the conversation of run {lease.run_id} is gone")
            raise lease_lost(lease)

        await self._tx(go, transaction=False)

    # ---- journal ----------------------------------------------------------------------

    async def load_turn(self, run_id: str) -> TurnState:
        async def go(conn: Conn, _ambiguous: bool) -> TurnState:
            # Three reads, one round trip.
            async with conn.pipeline():
                run_cur = await conn.execute(
                    f"SELECT {_prefixed('r', RUN_COLUMNS)}, {_prefixed('c', CONVERSATION_COLUMNS)} "
                    "FROM runs r JOIN conversations c ON c.id = r.conversation_id "
                    "WHERE r.id = %s",
                    (run_id,),
                )
                steps_cur = await conn.execute(
                    f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = %s", (run_id,)
                )
                seq_cur = await conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = %s", (run_id,)
                )
            row = await run_cur.fetchone()
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            width = len(RUN_COLUMNS.split(","))
            seq_row = await seq_cur.fetchone()
            return TurnState(
                run=run_from_row(row[:width]),
                conversation=conversation_from_row(row[width:]),
                steps={r[1]: StepRecord(*r) for r in await steps_cur.fetchall()},
                last_event_seq=int(seq_row[0]) if seq_row else 0,
            )

        return await self._tx(go, transaction=False)

    async def load_steps(self, run_id: str) -> dict[int, StepRecord]:
        rows = await self._fetch(f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = %s", (run_id,))
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
        params: dict[str, Any] = {
            "state": state,
            "now": now,
            "lease_run": lease.run_id,
            "lease_epoch": lease.epoch,
            "before": now + lease_seconds / 2,
            "until": now + lease_seconds,
            **_step_params(steps),
            **_event_params(events),
            "events_channel": self.events_channel,
        }
        # One statement, so one round trip: fence (the run row at this epoch, renewing the
        # lease when less than half of it is left), move the conversation, insert the
        # steps and the events.
        sql = f"""
            WITH fence AS (
                UPDATE runs SET lease_expires_at = CASE
                    WHEN lease_expires_at IS NULL OR lease_expires_at < %(before)s
                    THEN %(until)s ELSE lease_expires_at END
                WHERE id = %(lease_run)s AND epoch = %(lease_epoch)s AND status = 'running'
                RETURNING id, conversation_id
            ), moved AS (
                UPDATE conversations c SET state = %(state)s::text, updated_at = %(now)s
                FROM fence WHERE %(state)s::text IS NOT NULL AND c.id = fence.conversation_id
            ), step AS (
                INSERT INTO steps ({_STEP_COLUMNS}) SELECT s.* FROM fence, {_STEPS_FROM}
            ), ev AS (
                INSERT INTO events ({EVENT_COLUMNS}) SELECT e.* FROM fence, {_EVENTS_FROM}
            )
            SELECT (SELECT count(*) FROM fence), {self._events_notify_sql("lease_run")}
        """

        async def go(conn: Conn, ambiguous: bool) -> None:
            if ambiguous and await self._write_landed(conn, steps, events):
                return  # the interrupted attempt committed
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None or int(row[0]) != 1:
                raise lease_lost(lease)

        await self._tx(go, transaction=False)

    async def _write_landed(
        self, conn: Conn, steps: Sequence[StepRecord], events: list[EventRecord]
    ) -> bool:
        """Whether an interrupted write of these steps and events committed."""
        if steps:
            cur = await conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = %s AND seq = ANY(%s)",
                (steps[0].run_id, [st.seq for st in steps]),
            )
            stored = [StepRecord(*row) for row in await cur.fetchall()]
            return all(st in stored for st in steps)
        return bool(events) and await self._events_exist(conn, events)

    # ---- events -----------------------------------------------------------------------

    async def append_events(
        self, lease: Lease, events: list[EventRecord], *, state: str | None = None
    ) -> None:
        if not events and state is None:
            return
        params: dict[str, Any] = {
            "run_id": lease.run_id,
            "epoch": lease.epoch,
            "state": state,
            "now": time.time(),
            **_event_params(events),
        }
        sql = f"""
            WITH fence AS ({_FENCE_LOCK_CONVERSATION}), moved AS (
                UPDATE conversations c SET state = %(state)s::text, updated_at = %(now)s
                FROM fence WHERE %(state)s::text IS NOT NULL AND c.id = fence.conversation_id
            ), ev AS (
                INSERT INTO events ({EVENT_COLUMNS}) SELECT e.* FROM fence, {_EVENTS_FROM}
            )
            SELECT (SELECT count(*) FROM fence), {self._events_notify_sql("run_id")}
        """
        params["events_channel"] = self.events_channel

        async def go(conn: Conn, ambiguous: bool) -> None:
            if ambiguous and events and await self._events_exist(conn, events):
                return  # the interrupted attempt committed
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None or int(row[0]) != 1:
                raise lease_lost(lease)

        await self._tx(go, transaction=False)

    async def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        check_limit(limit)
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = %s AND seq > %s ORDER BY seq "
            "LIMIT %s",
            (run_id, after_seq, limit),  # LIMIT NULL: no limit
        )
        return [event_from_row(r) for r in rows]

    async def read_events_of(self, run_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        ids = list(dict.fromkeys(run_ids))
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ANY(%s) ORDER BY run_id, seq",
            (ids,),
        )
        return events_by_run(ids, rows)

    async def last_event_seq(self, run_id: str) -> int:
        rows = await self._fetch(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = %s", (run_id,)
        )
        return int(rows[0][0])

    # ---- side effects -----------------------------------------------------------------

    async def record_effect(self, effect: EffectRecord) -> bool:
        payload = dumps(effect.payload)

        async def go(conn: Conn, ambiguous: bool) -> bool:
            if ambiguous:
                cur = await conn.execute(
                    "SELECT kind, run_id, payload, created_at FROM effects "
                    "WHERE idempotency_key = %s",
                    (effect.idempotency_key,),
                )
                row = await cur.fetchone()
                if row == (effect.kind, effect.run_id, payload, effect.created_at):
                    return True  # the interrupted attempt inserted it
            cur = await conn.execute(
                "INSERT INTO effects (idempotency_key, kind, run_id, conversation_id, tenant, "
                "payload, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (
                    effect.idempotency_key,
                    effect.kind,
                    effect.run_id,
                    effect.conversation_id,
                    effect.tenant,
                    payload,
                    float(effect.created_at),
                ),
            )
            return cur.rowcount == 1

        return await self._tx(go, transaction=False)

    async def list_effects(
        self, *, conversation_id: str | None = None, kind: str | None = None
    ) -> list[EffectRecord]:
        where: list[str] = []
        params: list[Any] = []
        if conversation_id is not None:
            where.append("conversation_id = %s")
            params.append(conversation_id)
        if kind is not None:
            where.append("kind = %s")
            params.append(kind)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetch(
            "SELECT idempotency_key, kind, run_id, conversation_id, tenant, payload, created_at "
            f'FROM effects {clause} ORDER BY created_at, idempotency_key COLLATE "C"',
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
        async def tx(conn: Conn, _ambiguous: bool) -> PurgeReport:
            report = PurgeReport()
            # Lock the expired conversations (create_run locks them too, so no run can be
            # queued on them meanwhile), then drop those that still have an active run.
            cur = await conn.execute(
                "SELECT id FROM conversations WHERE expires_at < %s FOR UPDATE SKIP LOCKED",
                (now,),
            )
            candidates = [r[0] for r in await cur.fetchall()]
            if not candidates:
                return report
            cur = await conn.execute(
                "SELECT DISTINCT conversation_id FROM runs WHERE conversation_id = ANY(%s) "
                "AND status IN ('queued', 'running')",
                (candidates,),
            )
            busy = {r[0] for r in await cur.fetchall()}
            ids = [c for c in candidates if c not in busy]
            if not ids:
                return report
            runs_of = "SELECT id FROM runs WHERE conversation_id = ANY(%s)"
            cur = await conn.execute(f"DELETE FROM events WHERE run_id IN ({runs_of})", (ids,))
            report.events = cur.rowcount
            await conn.execute(f"DELETE FROM steps WHERE run_id IN ({runs_of})", (ids,))
            await conn.execute(f"DELETE FROM attempts WHERE run_id IN ({runs_of})", (ids,))
            cur = await conn.execute("DELETE FROM runs WHERE conversation_id = ANY(%s)", (ids,))
            report.runs = cur.rowcount
            await conn.execute("DELETE FROM messages WHERE conversation_id = ANY(%s)", (ids,))
            await conn.execute("DELETE FROM summaries WHERE conversation_id = ANY(%s)", (ids,))
            await conn.execute("DELETE FROM effects WHERE conversation_id = ANY(%s)", (ids,))
            cur = await conn.execute("DELETE FROM conversations WHERE id = ANY(%s)", (ids,))
            report.conversations = cur.rowcount
            return report

        return await self._tx(tx)

    # ---- shared resilience state ------------------------------------------------------

    async def breaker_load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        rows = await self._fetch("SELECT state, version FROM breakers WHERE name = %s", (name,))
        if not rows:
            return None, 0
        return loads(rows[0][0]), int(rows[0][1])

    async def breaker_save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        text = dumps(state)

        async def go(conn: Conn, ambiguous: bool) -> bool:
            if ambiguous:
                cur = await conn.execute(
                    "SELECT state, version FROM breakers WHERE name = %s", (name,)
                )
                if await cur.fetchone() == (text, version + 1):
                    return True  # the interrupted attempt stored it
            if version == 0:
                cur = await conn.execute(
                    "INSERT INTO breakers (name, state, version, updated_at) "
                    "VALUES (%s,%s,1,%s) ON CONFLICT DO NOTHING",
                    (name, text, time.time()),
                )
            else:
                cur = await conn.execute(
                    "UPDATE breakers SET state = %s, version = version + 1, updated_at = %s "
                    "WHERE name = %s AND version = %s",
                    (text, time.time(), name, version),
                )
            return cur.rowcount == 1

        return await self._tx(go, transaction=False)

    async def list_breakers(self) -> list[tuple[str, dict[str, Any], int]]:
        rows = await self._fetch(
            'SELECT name, state, version FROM breakers ORDER BY name COLLATE "C"'
        )
        return [(r[0], loads(r[1]), int(r[2])) for r in rows]

    # ---- journaled retry attempts -----------------------------------------------------

    async def load_attempt(self, run_id: str, seq: int) -> dict[str, Any] | None:
        rows = await self._fetch(
            "SELECT state FROM attempts WHERE run_id = %s AND seq = %s", (run_id, seq)
        )
        if not rows:
            return None
        state: dict[str, Any] = loads(rows[0][0])
        return state

    async def save_attempt(self, lease: Lease, seq: int, state: dict[str, Any]) -> None:
        params = {
            "run_id": lease.run_id,
            "epoch": lease.epoch,
            "seq": seq,
            "state": dumps(state),
            "now": time.time(),
        }
        sql = f"""
            WITH fence AS ({_FENCE_LOCK}), saved AS (
                INSERT INTO attempts (run_id, seq, state, updated_at)
                SELECT id, %(seq)s::bigint, %(state)s::text, %(now)s::float8 FROM fence
                ON CONFLICT (run_id, seq) DO UPDATE SET state = excluded.state,
                    updated_at = excluded.updated_at
            )
            SELECT count(*) FROM fence
        """

        async def go(conn: Conn, _ambiguous: bool) -> None:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
            if row is None or int(row[0]) != 1:
                raise lease_lost(lease)

        await self._tx(go, transaction=False)

    # ---- cached answers ---------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        rows = await self._fetch("SELECT value FROM response_cache WHERE key = %s", (key,))
        return loads(rows[0][0]) if rows else None

    async def cache_put(self, key: str, value: dict[str, Any]) -> None:
        async def go(conn: Conn, _ambiguous: bool) -> None:
            await conn.execute(
                "INSERT INTO response_cache (key, value, updated_at) VALUES (%s,%s,%s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at",
                (key, dumps(value), time.time()),
            )

        await self._tx(go, transaction=False)

    async def cache_prune(self, *, older_than: float) -> int:
        async def go(conn: Conn, _ambiguous: bool) -> int:
            cur = await conn.execute(
                "DELETE FROM response_cache WHERE updated_at < %s", (older_than,)
            )
            return cur.rowcount

        return await self._tx(go, transaction=False)
