"""The PostgreSQL on this machine, for tests: a DSN, fresh schemas, and a clear skip.

DSN: $ORCHESTRION_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test). When
the server cannot be reached the tests skip with the reason, unless $ORCHESTRION_CI is
set (.ci/run sets it): then they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

DSN = os.environ.get("ORCHESTRION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def require_postgres() -> None:
    try:
        with psycopg.connect(DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = (
            f"PostgreSQL is not reachable at {DSN} ({str(exc).strip()}); set "
            "ORCHESTRION_TEST_POSTGRES or start it (pg_ctlcluster <version> main start)"
        )
        if os.environ.get("ORCHESTRION_CI"):
            pytest.fail(f"{reason} [ORCHESTRION_CI is set: PostgreSQL tests are mandatory]")
        pytest.skip(reason)


def store_url(schema: str) -> str:
    separator = "&" if "?" in DSN else "?"
    return f"{DSN}{separator}schema={schema}"


def drop_schema(schema: str) -> None:
    # Connections still in the schema's pools would keep locks: end them first.
    sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND application_name = %s",
        (f"orchestrion/{schema}",),
    )
    sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_schema(prefix: str = "t") -> Iterator[str]:
    """A schema name nobody uses; dropped (with everything in it) afterwards."""
    require_postgres()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_schema(schema)


def sql(query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on a fresh connection; a connection the server dropped (a test
    restarting it, or terminating backends) is retried for a few seconds."""
    for attempt in range(20):
        try:
            with psycopg.connect(DSN, autocommit=True, connect_timeout=3) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


@contextmanager
def any_store_url(backend: str, folder: Path) -> Iterator[str]:
    """A store URL where nothing exists yet: a SQLite file in `folder`, or a fresh schema
    (dropped afterwards) when `backend` is "postgresql"."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'x.db'}"
    else:
        with fresh_schema("t") as schema:
            yield store_url(schema)
