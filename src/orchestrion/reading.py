"""Paged reads of what happened: a conversation's history, a run's or a conversation's
trace. Each page is read through an index and bounded, whatever the conversation's size;
`page.next` holds the arguments that read the next page in the same direction (None
when there is nothing more to read).

    page = await orx.history(conversation_id, limit=100)  # the newest 100 messages
    while page.next:  # then back, 100 at a time
        page = await orx.history(conversation_id, limit=100, **page.next)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrion.errors import NotFound
from orchestrion.models.messages import Message
from orchestrion.observe.trace import Span, build_run_tree, conversation_tree
from orchestrion.store.base import EventRecord, MessageRecord, RunRecord, Store


class HistoryPage(list[Message]):
    """Messages of a conversation, oldest first: a list, plus where it sits.

    `start` is the index of its first message in the conversation's history (None when
    empty), so message i of the page is message `start + i` of the conversation; `next`
    is {"before": index} (older messages) or {"after": index} (newer ones), or None."""

    def __init__(
        self,
        messages: Iterable[Message] = (),
        *,
        start: int | None = None,
        next: dict[str, int] | None = None,
    ) -> None:
        super().__init__(messages)
        self.start = start
        self.next = next


@dataclass
class TracePage:
    """Span trees of a page of runs (one root per run, oldest first) or of a page of one
    run's events. `next` reads the next page; `last_seq` (a run's trace) is the seq of the
    last event read: follow the run's events after it to see it go on."""

    spans: list[Span]
    next: dict[str, Any] | None
    runs: list[RunRecord]
    last_seq: int | None = None


class InvalidCursor(ValueError):
    """A page cursor that names nothing this conversation has."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


async def history_page(
    store: Store,
    conversation_id: str,
    *,
    limit: int | None,
    before: int | None,
    after: int | None,
) -> HistoryPage:
    _check_limit(limit)
    forward = after is not None
    probe = None if limit is None else limit + 1  # one more: is there a next page?
    records = await store.history_page(conversation_id, after=after, before=before, limit=probe)
    more = limit is not None and len(records) > limit
    if more:
        records = records[:limit] if forward else records[1:]
    next_page: dict[str, int] | None = None
    if more:
        next_page = {"after": records[-1].index} if forward else {"before": records[0].index}
    return HistoryPage(
        (_message(r) for r in records),
        start=records[0].index if records else None,
        next=next_page,
    )


def _message(record: MessageRecord) -> Message:
    return Message.model_validate(record.body)


async def run_trace_page(
    store: Store, run: RunRecord, *, after: int, limit: int | None
) -> TracePage:
    _check_limit(limit)
    probe = None if limit is None else limit + 1
    events = await store.read_events(run.id, after_seq=after, limit=probe)
    more = limit is not None and len(events) > limit
    events = events[:limit] if more else events
    # Building a tree of thousands of events is CPU work: not on the loop.
    spans = await asyncio.to_thread(build_run_tree, events)
    last_seq = events[-1].seq if events else after
    return TracePage(
        spans=spans, next={"after": last_seq} if more else None, runs=[run], last_seq=last_seq
    )


async def conversation_trace_page(
    store: Store,
    conversation_id: str,
    *,
    tenant: str | None,
    limit: int,
    before: str | None,
    after: str | None,
    max_events: int | None,
) -> TracePage:
    """The runs of a page: the newest `limit` (before the run `before`), or the first
    `limit` after the run `after`; a page also ends after the run that brings its events
    to `max_events` (it always holds at least one run)."""
    _check_limit(limit)
    before_position = await _cursor(store, conversation_id, before, "before", tenant)
    after_position = await _cursor(store, conversation_id, after, "after", tenant)
    forward = after is not None
    runs = await store.list_runs(
        conversation_id=conversation_id,
        limit=limit + 1,
        before_position=before_position,
        after_position=after_position,
        oldest_first=forward,
    )
    more = len(runs) > limit
    runs = runs[:limit]  # in the order of travel: newest first when paging back
    events = await store.read_events_of([r.id for r in runs])
    kept: list[RunRecord] = []
    total = 0
    for run in runs:
        count = len(events[run.id])
        if kept and max_events is not None and total + count > max_events:
            more = True
            break
        kept.append(run)
        total += count
    next_page = None
    if more and kept:
        next_page = {"after": kept[-1].id} if forward else {"before": kept[-1].id}
    pairs: list[tuple[RunRecord, list[EventRecord]]] = [(r, events[r.id]) for r in kept]
    spans = await asyncio.to_thread(conversation_tree, pairs)
    return TracePage(spans=spans, next=next_page, runs=sorted(kept, key=lambda r: r.position))


async def _cursor(
    store: Store, conversation_id: str, run_id: str | None, name: str, tenant: str | None
) -> int | None:
    """The queue position of the run that a cursor names."""
    if run_id is None:
        return None
    try:
        run = await store.get_run(run_id, tenant=tenant)
    except NotFound:
        run = None
    if run is None or run.conversation_id != conversation_id:
        raise InvalidCursor(
            name, f"{name} must be the id of a run of conversation {conversation_id!r}"
        )
    return run.position
