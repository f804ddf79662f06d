"""Stores: the interface, and the backends selected by URL."""

from __future__ import annotations

import os

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


def open_store(url: str | None = None, *, durability: Durability = "normal") -> Store:
    """Make a store from a URL (not yet opened): `sqlite:///relative.db`,
    `sqlite:////absolute/path.db`, or `postgresql://user@host:port/db?schema=NAME` (schema
    default "orchestrion"). A bare path is taken as a SQLite file."""
    url = url or default_store_url()
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"), durability=durability)
    if url.startswith(("postgresql://", "postgres://")):
        from orchestrion.store.postgres import PostgresStore

        return PostgresStore(url)
    if "://" in url:
        from orchestrion.errors import StoreError

        raise StoreError(
            f"unknown store URL {url!r}: expected sqlite:///path/to/file.db "
            "or postgresql://user@host:port/db?schema=NAME"
        )
    return SQLiteStore(url, durability=durability)


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
