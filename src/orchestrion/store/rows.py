"""What every SQL backend shares: JSON in and out of text columns, the column lists of the
records, and the conversion of a row into a record. Only the SQL dialect differs."""

from __future__ import annotations

from typing import Any

import pydantic_core

from orchestrion.errors import LeaseLost
from orchestrion.store.base import ConversationRecord, EventRecord, Lease, RunRecord


def dumps(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else pydantic_core.from_json(text)


RUN_COLUMNS = (
    "id, conversation_id, tenant, agent, status, input, trace_id, created_at, position, "
    "result, error, owner, epoch, lease_expires_at, deadline_at, cancel_requested, "
    "started_at, finished_at"
)
CONVERSATION_COLUMNS = (
    "id, tenant, agent, state, version, message_count, ttl_seconds, created_at, updated_at, "
    "expires_at"
)
EVENT_COLUMNS = (
    'run_id, seq, type, name, trace_id, span_id, parent_span_id, start, "end", latency_ms, '
    "status, attributes"
)


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of RUN_COLUMNS."""
    return RunRecord(
        id=row[0],
        conversation_id=row[1],
        tenant=row[2],
        agent=row[3],
        status=row[4],
        input=loads(row[5]),
        trace_id=row[6],
        created_at=row[7],
        position=row[8],
        result=loads(row[9]),
        error=loads(row[10]),
        owner=row[11],
        epoch=row[12],
        lease_expires_at=row[13],
        deadline_at=row[14],
        cancel_requested=bool(row[15]),
        started_at=row[16],
        finished_at=row[17],
    )


def conversation_from_row(row: tuple[Any, ...]) -> ConversationRecord:
    """A ConversationRecord from a row of CONVERSATION_COLUMNS."""
    return ConversationRecord(*row)


def event_from_row(row: tuple[Any, ...]) -> EventRecord:
    """An EventRecord from a row of EVENT_COLUMNS."""
    return EventRecord(
        run_id=row[0],
        seq=row[1],
        type=row[2],
        name=row[3],
        trace_id=row[4],
        span_id=row[5],
        parent_span_id=row[6],
        start=row[7],
        end=row[8],
        latency_ms=row[9],
        status=row[10],
        attributes=loads(row[11]),
    )


def lease_lost(lease: Lease) -> LeaseLost:
    return LeaseLost(
        f"run {lease.run_id}: lease epoch {lease.epoch} is no longer current "
        "(another worker took the run over); this write was refused"
    )
