"""Versioned schema migrations. Migration N brings a store from version N-1 to N.

Never edit a released migration: append a new one. A store whose version is higher than
the last entry here was written by a newer orchestrion and is refused, untouched.
"""

from __future__ import annotations

# SQLite's header field `application_id` marks a file as ours ("ORCH" in ASCII), so a
# foreign SQLite database is recognised before anything is written to it.
SQLITE_APPLICATION_ID = 0x4F524348

SQLITE_MIGRATIONS: list[str] = [
    # 1: the core model
    """
    CREATE TABLE conversations (
        id            TEXT PRIMARY KEY,
        tenant        TEXT NOT NULL,
        agent         TEXT NOT NULL,
        state         TEXT NOT NULL,
        version       INTEGER NOT NULL DEFAULT 0,
        message_count INTEGER NOT NULL DEFAULT 0,
        ttl_seconds   REAL NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        expires_at    REAL NOT NULL
    );
    CREATE INDEX conversations_by_expiry ON conversations (expires_at);

    -- The history is append-only: one row per message, written once, never rewritten.
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        idx             INTEGER NOT NULL,
        run_id          TEXT NOT NULL,
        body            TEXT NOT NULL,
        PRIMARY KEY (conversation_id, idx)
    ) WITHOUT ROWID;

    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        tenant           TEXT NOT NULL,
        agent            TEXT NOT NULL,
        status           TEXT NOT NULL,
        input            TEXT NOT NULL,
        result           TEXT,
        error            TEXT,
        owner            TEXT,
        epoch            INTEGER NOT NULL DEFAULT 0,
        lease_expires_at REAL,
        trace_id         TEXT NOT NULL,
        deadline_at      REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        position         INTEGER NOT NULL,
        created_at       REAL NOT NULL,
        started_at       REAL,
        finished_at      REAL
    );
    -- dequeueing and recovery: by status, then lease expiry
    CREATE INDEX runs_by_status ON runs (status, lease_expires_at);
    -- one active run per conversation, in queue order
    CREATE INDEX runs_by_conversation ON runs (conversation_id, position);

    CREATE TABLE steps (
        run_id          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        name            TEXT NOT NULL,
        status          TEXT NOT NULL,
        result          TEXT,
        error           TEXT,
        idempotency_key TEXT NOT NULL,
        started_at      REAL NOT NULL,
        finished_at     REAL NOT NULL,
        epoch           INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        run_id         TEXT NOT NULL,
        seq            INTEGER NOT NULL,
        type           TEXT NOT NULL,
        name           TEXT NOT NULL,
        trace_id       TEXT NOT NULL,
        span_id        TEXT NOT NULL,
        parent_span_id TEXT,
        start          REAL NOT NULL,
        "end"          REAL,
        latency_ms     REAL,
        status         TEXT,
        attributes     TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE effects (
        idempotency_key TEXT PRIMARY KEY,
        kind            TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        tenant          TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      REAL NOT NULL
    );
    CREATE INDEX effects_by_conversation ON effects (conversation_id);

    CREATE TABLE breakers (
        name       TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 2: the retry state of steps in flight, so a crash mid-backoff keeps the attempt count
    """
    CREATE TABLE attempts (
        run_id     TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        state      TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    """,
    # 3: last good model answers by request, the "cached answer" fallback of a model
    """
    CREATE TABLE response_cache (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX response_cache_by_age ON response_cache (updated_at);
    """,
    # 4: per-queue start rate limits shared by every worker (a token bucket per queue)
    """
    CREATE TABLE queue_limits (
        queue      TEXT PRIMARY KEY,
        tokens     REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 5: claiming without scans: queued runs in queue order, each conversation's active
    # runs in order (is a run at its conversation's head?), running runs by lease expiry
    """
    CREATE INDEX runs_queued ON runs (position) WHERE status = 'queued';
    CREATE INDEX runs_active_by_conversation ON runs (conversation_id, position)
        WHERE status IN ('queued', 'running');
    CREATE INDEX runs_running_by_lease ON runs (lease_expires_at) WHERE status = 'running';
    """,
    # 6: listing runs newest first without scans (GET /v1/runs, the console): a tenant's,
    # a tenant's of some status, and everyone's (the local console). Only `status`
    # changes after the insert. (SQLite: the MAX(position) of each submit becomes a seek.)
    """
    CREATE INDEX runs_by_tenant ON runs (tenant, position);
    CREATE INDEX runs_by_tenant_status ON runs (tenant, status, position);
    CREATE INDEX runs_by_position ON runs (position);
    """,
    # 7: context summaries: what a summarising context policy folded into a summary (the
    # messages it covers, its text, the model, the tokens), stored with the conversation.
    # A run's summaries are keyed by the point of the run that made them, so a resumed run
    # finds the one it already made instead of asking the model again.
    """
    CREATE TABLE summaries (
        conversation_id TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        label           TEXT NOT NULL,
        first_idx       INTEGER NOT NULL,
        last_idx        INTEGER NOT NULL,
        text            TEXT NOT NULL,
        model           TEXT NOT NULL,
        input_tokens    INTEGER NOT NULL,
        output_tokens   INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        PRIMARY KEY (conversation_id, run_id, label)
    ) WITHOUT ROWID;
    CREATE INDEX summaries_by_coverage ON summaries (conversation_id, last_idx);
    """,
]

# PostgreSQL: the same versions as SQLite's list (migration N here brings the same tables
# to the same version N), so `schema_version()` means the same thing on both backends.
# Everything lives in one PostgreSQL schema (search_path points at it); the `meta` table
# marks the schema as an orchestrion store and holds its version. Timestamps are double
# precision (exact float round trips), JSON is text (stored exactly as written).
POSTGRES_MIGRATIONS: list[str] = [
    # 1: the core model
    """
    CREATE TABLE conversations (
        id            TEXT PRIMARY KEY,
        tenant        TEXT NOT NULL,
        agent         TEXT NOT NULL,
        state         TEXT NOT NULL,
        version       BIGINT NOT NULL DEFAULT 0,
        message_count BIGINT NOT NULL DEFAULT 0,
        ttl_seconds   DOUBLE PRECISION NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL,
        updated_at    DOUBLE PRECISION NOT NULL,
        expires_at    DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX conversations_by_expiry ON conversations (expires_at);

    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        idx             BIGINT NOT NULL,
        run_id          TEXT NOT NULL,
        body            TEXT NOT NULL,
        PRIMARY KEY (conversation_id, idx)
    );

    -- Global queue order. Positions are taken while the conversation row is locked, so
    -- within one conversation they commit in increasing order.
    CREATE SEQUENCE run_positions;

    CREATE TABLE runs (
        id               TEXT PRIMARY KEY,
        conversation_id  TEXT NOT NULL,
        tenant           TEXT NOT NULL,
        agent            TEXT NOT NULL,
        status           TEXT NOT NULL,
        input            TEXT NOT NULL,
        result           TEXT,
        error            TEXT,
        owner            TEXT,
        epoch            BIGINT NOT NULL DEFAULT 0,
        lease_expires_at DOUBLE PRECISION,
        trace_id         TEXT NOT NULL,
        deadline_at      DOUBLE PRECISION,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        position         BIGINT NOT NULL,
        created_at       DOUBLE PRECISION NOT NULL,
        started_at       DOUBLE PRECISION,
        finished_at      DOUBLE PRECISION
    );
    -- dequeueing and recovery by status in queue order (the lease expiry is left out of
    -- the index on purpose: renewing a lease is then a HOT update)
    CREATE INDEX runs_by_status ON runs (status, position);
    CREATE INDEX runs_by_conversation ON runs (conversation_id, position);

    CREATE TABLE steps (
        run_id          TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        name            TEXT NOT NULL,
        status          TEXT NOT NULL,
        result          TEXT,
        error           TEXT,
        idempotency_key TEXT NOT NULL,
        started_at      DOUBLE PRECISION NOT NULL,
        finished_at     DOUBLE PRECISION NOT NULL,
        epoch           BIGINT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );

    CREATE TABLE events (
        run_id         TEXT NOT NULL,
        seq            BIGINT NOT NULL,
        type           TEXT NOT NULL,
        name           TEXT NOT NULL,
        trace_id       TEXT NOT NULL,
        span_id        TEXT NOT NULL,
        parent_span_id TEXT,
        start          DOUBLE PRECISION NOT NULL,
        "end"          DOUBLE PRECISION,
        latency_ms     DOUBLE PRECISION,
        status         TEXT,
        attributes     TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );

    CREATE TABLE effects (
        idempotency_key TEXT PRIMARY KEY,
        kind            TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        tenant          TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX effects_by_conversation ON effects (conversation_id);

    CREATE TABLE breakers (
        name       TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        version    BIGINT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 2: the retry state of steps in flight
    """
    CREATE TABLE attempts (
        run_id     TEXT NOT NULL,
        seq        BIGINT NOT NULL,
        state      TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
    # 3: last good model answers by request (the "cached answer" fallback)
    """
    CREATE TABLE response_cache (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX response_cache_by_age ON response_cache (updated_at);
    """,
    # 4: per-queue start rate limits shared by the fleet (a token bucket per queue)
    """
    CREATE TABLE queue_limits (
        queue      TEXT PRIMARY KEY,
        tokens     DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    # 5: as SQLite's 5 (claiming without scans)
    """
    CREATE INDEX runs_queued ON runs (position) WHERE status = 'queued';
    CREATE INDEX runs_active_by_conversation ON runs (conversation_id, position)
        WHERE status IN ('queued', 'running');
    CREATE INDEX runs_running_by_lease ON runs (lease_expires_at) WHERE status = 'running';
    """,
    # 6: as SQLite's 6 (listing runs newest first without scans)
    """
    CREATE INDEX runs_by_tenant ON runs (tenant, position);
    CREATE INDEX runs_by_tenant_status ON runs (tenant, status, position);
    CREATE INDEX runs_by_position ON runs (position);
    """,
    # 7: as SQLite's 7 (context summaries)
    """
    CREATE TABLE summaries (
        conversation_id TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        label           TEXT NOT NULL,
        first_idx       BIGINT NOT NULL,
        last_idx        BIGINT NOT NULL,
        text            TEXT NOT NULL,
        model           TEXT NOT NULL,
        input_tokens    BIGINT NOT NULL,
        output_tokens   BIGINT NOT NULL,
        created_at      DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (conversation_id, run_id, label)
    );
    CREATE INDEX summaries_by_coverage ON summaries (conversation_id, last_idx);
    """,
]
