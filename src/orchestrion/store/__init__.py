"""Stores: the interface, and the backends selected by URL."""

from __future__ import annotations

import os
import re

from orchestrion.errors import StoreError
from orchestrion.store.base import (
    ConversationRecord,
    Durability,
    EffectRecord,
    EventRecord,
    Lease,
    PurgeReport,
    RunCompletion,
    RunRecord,
    StepRecord,
    Store,
)
from orchestrion.store.sqlite import SQLiteStore

DEFAULT_STORE_URL = "sqlite:///orchestrion.db"


def default_store_url() -> str:
    return os.environ.get("ORCHESTRION_STORE") or DEFAULT_STORE_URL


def open_store(
    url: str | None = None, *, durability: Durability = "normal", create: bool = True
) -> Store:
    """Make a store from a URL (not yet opened): `sqlite:///relative.db`,
    `sqlite:////absolute/path.db`, or `postgresql://user@host:port/db?schema=NAME` (schema
    default "orchestrion"). A bare path is taken as a SQLite file.

    With `create=False`, opening raises NoStore where no store exists yet (a missing or
    empty file, a missing schema) instead of creating one: for commands that only read."""
    url = url or default_store_url()
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"), durability=durability, create=create)
    if url.startswith(("postgresql://", "postgres://")):
        from orchestrion.store.postgres import PostgresStore

        return PostgresStore(url, create=create)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        path = path[2:] if path.startswith("//") else path
        raise StoreError(
            f"invalid store URL {url!r}: a SQLite URL has three slashes before a relative "
            f"path and four before an absolute one; did you mean sqlite:///{path}?"
        )
    if "://" in url or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", url):
        raise StoreError(
            f"unknown store URL {url!r}: expected sqlite:///path/to/file.db "
            "or postgresql://user@host:port/db?schema=NAME"
        )
    return SQLiteStore(url, durability=durability, create=create)


__all__ = [
    "DEFAULT_STORE_URL",
    "ConversationRecord",
    "EffectRecord",
    "EventRecord",
    "Lease",
    "PurgeReport",
    "RunCompletion",
    "RunRecord",
    "SQLiteStore",
    "StepRecord",
    "Store",
    "default_store_url",
    "open_store",
]
