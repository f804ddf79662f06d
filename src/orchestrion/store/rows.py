"""What every SQL backend shares: JSON in and out of text columns, the column lists of the
records, and the conversion of a row into a record. Only the SQL dialect differs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pydantic_core

from orchestrion.errors import ConversationBusy, ConversationClosed, ConversationExpired, LeaseLost
from orchestrion.store.base import (
    ConversationRecord,
    EventRecord,
    Lease,
    MessageRecord,
    RunRecord,
    SummaryRecord,
    check_limit,
)

# ConversationState.CLOSED (the store does not import the engine's state machine).
CLOSED_STATE = "CLOSED"
# The conversation's queued or running run, if any ({mark}: the backend's placeholder).
ACTIVE_RUN_SQL = (
    "SELECT id FROM runs WHERE conversation_id = {mark} "
    "AND status IN ('queued','running') LIMIT 1"
)


def conversation_closed(conversation_id: str) -> ConversationClosed:
    return ConversationClosed(
        f"conversation {conversation_id!r} is closed: it takes no more turns (its history "
        "stays readable until it expires); start a new conversation"
    )


def conversation_expired(conversation_id: str, expires_at: float) -> ConversationExpired:
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires_at))
    return ConversationExpired(
        f"conversation {conversation_id!r} expired at {at} (its TTL after its last turn): "
        "it takes no more turns and the purge deletes it; start a new conversation"
    )


def close_refused(conversation_id: str, run_id: str) -> ConversationBusy:
    return ConversationBusy(
        f"conversation {conversation_id!r} has a turn in flight ({run_id}): cancel it or "
        "wait for it to end, then close the conversation"
    )


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


# ---- paged reads: the same SQL on every backend, with its own placeholder ----------------


def runs_query(
    *,
    mark: str,
    conversation_id: str | None,
    tenant: str | None,
    limit: int,
    before_position: int | None,
    after_position: int | None,
    status: str | Sequence[str] | None,
    agent: str | None,
    oldest_first: bool,
) -> tuple[str, list[Any]]:
    """The SELECT of `Store.list_runs` (placeholders written as `mark`) and its params."""
    check_limit(limit)
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("conversation_id", "=", conversation_id),
        ("tenant", "=", tenant),
        ("position", "<", before_position),
        ("position", ">", after_position),
        ("agent", "=", agent),
    ):
        if value is not None:
            where.append(f"{column} {op} {mark}")
            params.append(value)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        if not statuses:
            where.append("1 = 0")  # none of no statuses
        else:
            where.append(f"status IN ({', '.join([mark] * len(statuses))})")
            params.extend(statuses)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    order = "ASC" if oldest_first else "DESC"
    sql = f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY position {order} LIMIT {mark}"
    return sql, [*params, limit]


def history_query(
    conversation_id: str,
    *,
    mark: str,
    after: int | None,
    before: int | None,
    limit: int | None,
    newest: bool = False,
) -> tuple[str, list[Any], bool]:
    """The SELECT of `Store.history_page` (with `newest`, of `Store.history_tail`: the
    last `limit` even after `after`), its params, and whether its rows come newest first
    (to be reversed)."""
    check_limit(limit)
    where = [f"conversation_id = {mark}"]
    params: list[Any] = [conversation_id]
    if after is not None:
        where.append(f"idx > {mark}")
        params.append(after)
    if before is not None:
        where.append(f"idx < {mark}")
        params.append(before)
    backward = (after is None or newest) and limit is not None
    sql = (
        f"SELECT idx, run_id, body FROM messages WHERE {' AND '.join(where)} "
        f"ORDER BY idx {'DESC' if backward else 'ASC'}"
    )
    if limit is not None:
        sql += f" LIMIT {mark}"
        params.append(limit)
    return sql, params, backward


def messages_from_rows(rows: Sequence[tuple[Any, ...]], *, reverse: bool) -> list[MessageRecord]:
    records = [MessageRecord(index=int(r[0]), run_id=r[1], body=loads(r[2])) for r in rows]
    if reverse:
        records.reverse()
    return records


SUMMARY_COLUMNS = (
    "conversation_id, run_id, label, first_idx, last_idx, text, model, input_tokens, "
    "output_tokens, created_at"
)


def summary_from_row(row: tuple[Any, ...]) -> SummaryRecord:
    """A SummaryRecord from a row of SUMMARY_COLUMNS."""
    return SummaryRecord(
        conversation_id=row[0],
        run_id=row[1],
        label=row[2],
        first_index=int(row[3]),
        last_index=int(row[4]),
        text=row[5],
        model=row[6],
        input_tokens=int(row[7]),
        output_tokens=int(row[8]),
        created_at=float(row[9]),
    )


def summary_params(s: SummaryRecord) -> tuple[Any, ...]:
    """A SummaryRecord as the values of SUMMARY_COLUMNS."""
    return (
        s.conversation_id,
        s.run_id,
        s.label,
        s.first_index,
        s.last_index,
        s.text,
        s.model,
        s.input_tokens,
        s.output_tokens,
        s.created_at,
    )


def events_by_run(
    run_ids: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> dict[str, list[EventRecord]]:
    """Rows of EVENT_COLUMNS ordered by (run_id, seq), grouped by run."""
    grouped: dict[str, list[EventRecord]] = {run_id: [] for run_id in run_ids}
    for row in rows:
        grouped.setdefault(row[0], []).append(event_from_row(row))
    return grouped
