"""Events: ids, and the per-run emitter that numbers, buffers and fans them out.

Durable events get a per-run sequence number from the run's current owner (only the
lease holder writes a run's events, so no coordination is needed). They are buffered and
written in the next transaction the run makes anyway (a step record, the completion), or
by the process's upkeep when they have waited a moment (a long step's start, streamed
text): one commit per step, not per event. A pending conversation state change rides in
the same commit as the events it comes with.

Live consumers in this process (a caller iterating `Orchestrion.stream`) get a durable
event only once it is committed: what they see has happened, and a turn's end is never
reported before it is durable. Streamed text is the exception: a model streams tokens
far faster than rows are worth writing, so live consumers get every token at once (seq
0, never stored, like `text.reset` for a voided attempt), while the durable record gets
the same text coalesced into `text.delta` chunks of at most TEXT_CHUNK_SECONDS each, so
a reader that reattaches later, or in another process, still receives every character
exactly once, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrion.errors import LeaseLost
from orchestrion.ids import random_hex
from orchestrion.store.base import EventRecord, StepRecord

T = TypeVar("T")

# Types whose event closes a span (carries `end`).
SPAN_END_TYPES = frozenset({"run.finished", "step.finished"})
# Stream content rather than a span: kept in the event log, left out of trace trees.
STREAM_TYPES = frozenset({"text.delta", "text.reset"})
# The longest a piece of streamed text waits before it is part of a durable chunk.
TEXT_CHUNK_SECONDS = 0.05


def new_trace_id() -> str:
    return random_hex(32)


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_hex(16)}"


def derived_span_id(*parts: object) -> str:
    """A span id that is the same in every process: a re-executed step after a crash gets
    the same span as its interrupted first attempt, so the trace tree stays one tree."""
    text = "/".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def run_span_id(run_id: str) -> str:
    return derived_span_id(run_id, "run")


Sink = Callable[[EventRecord], None]


@dataclass(slots=True)
class Pending:
    """What a run's next commit carries: buffered events, the latest conversation state
    change, and the records of read-only steps recorded lazily."""

    events: list[EventRecord]
    state: str | None
    steps: list[StepRecord]


# A durable write of a run: one store transaction carrying what was pending.
Write = Callable[[Pending], Awaitable[T]]
# Told of each batch of a run's events once the store committed it (in seq order, in the
# process executing the run): the OpenTelemetry export. Must not raise or block.
Committed = Callable[[list[EventRecord]], None]


class RunEmitter:
    """Numbers a run's events, buffers the durable ones, and hands all to live sinks."""

    def __init__(self, run_id: str, trace_id: str, *, next_seq: int) -> None:
        self.run_id = run_id
        self.trace_id = trace_id
        self.root_span = run_span_id(run_id)
        self._next_seq = next_seq
        self._buffer: list[EventRecord] = []
        self._quiet: set[int] = set()  # seqs of buffered events live readers already had
        self._state: str | None = None  # a conversation state change not yet written
        self._steps: list[StepRecord] = []  # read-only steps recorded lazily
        self.pending_since = 0.0  # monotonic time the oldest unwritten thing appeared
        # Called when something becomes pending (the upkeep then flushes it if it waits).
        self.on_pending: Callable[[RunEmitter], None] | None = None
        self.sinks: list[Sink] = []
        self.committed: list[Committed] = []
        # While the journal replays recorded steps, their events already exist: drop them.
        self.suppressed: Callable[[], bool] = lambda: False
        # The text chunk being gathered: its parts, its span, when it started.
        self._chunk: list[str] = []
        self._chunk_span = ""
        self._chunk_started = 0.0
        self._commit_lock = asyncio.Lock()
        self._spans_with_text: set[str] = set()

    def reset_seq(self, next_seq: int) -> None:
        """Number the next event `next_seq` (the run's stored events come before it)."""
        assert not self._buffer, "events were emitted before the run's numbering was known"
        self._next_seq = next_seq

    async def commit(self, write: Write[T]) -> T:
        """Hand the buffered events and the pending state change to `write` (a store call
        that stores them in one transaction), one writer at a time, then publish them to
        live sinks. Sequence numbers are handed out in order; without the lock, two writes
        of one run could commit out of order (a step record and a background flush on two
        pooled connections, or one of them waiting out a lock), and a reader between the
        two commits would move past the lower numbers for good. What a failed write
        carried goes back to the buffer, except when the lease is lost (nothing may be
        written then)."""
        async with self._commit_lock:
            pending, quiet = self.drain()
            events = pending.events
            try:
                result = await write(pending)
            except LeaseLost:
                raise
            except BaseException:
                self._buffer[:0] = events
                self._quiet |= quiet
                self._steps[:0] = pending.steps
                if self._state is None:
                    self._state = pending.state
                self._mark_pending()
                raise
            for listener in self.committed:
                listener(events)
            if self.sinks:
                for event in events:
                    if event.seq not in quiet:
                        self._publish(event)
            return result

    def drain(self) -> tuple[Pending, set[int]]:
        """Take what is pending, and the seqs of its events not to publish."""
        self._close_chunk()
        pending = Pending(self._buffer, self._state, self._steps)
        self._buffer, self._state, self._steps = [], None, []
        quiet, self._quiet = self._quiet, set()
        self.pending_since = 0.0
        return pending, quiet

    @property
    def pending(self) -> bool:
        return bool(self._buffer or self._chunk or self._steps) or self._state is not None

    @property
    def holds_steps(self) -> bool:
        """Whether step records wait for the next commit."""
        return bool(self._steps)

    def add_step(self, record: StepRecord) -> None:
        """A read-only step's record, written with the run's next commit (see Journal)."""
        self._steps.append(record)
        self._mark_pending()

    def set_state(self, state: str) -> None:
        """A conversation state change, written with the run's next commit."""
        self._state = state
        self._mark_pending()

    def _mark_pending(self) -> None:
        if not self.pending_since:
            self.pending_since = time.monotonic()
            if self.on_pending is not None:
                self.on_pending(self)

    def text(self, text: str, *, parent_span_id: str) -> None:
        """A piece of streamed model text: live now, durable as part of a chunk."""
        if self.suppressed() or not text:
            return
        now = time.time()
        self._live("text.delta", "text", parent_span_id, now, {"text": text})
        if self._chunk and (
            self._chunk_span != parent_span_id or now - self._chunk_started > TEXT_CHUNK_SECONDS
        ):
            self._close_chunk()
        if not self._chunk:
            self._chunk_span, self._chunk_started = parent_span_id, now
            self._mark_pending()
        self._chunk.append(text)
        if parent_span_id not in self._spans_with_text:
            # The first words of an answer are worth a row of their own: a reader sees
            # them at the next flush instead of a whole chunk later.
            self._spans_with_text.add(parent_span_id)
            self._close_chunk()

    def text_reset(self, attempt: int, *, parent_span_id: str) -> None:
        """The text streamed so far in this span is void (a retry or a fallback answers
        instead): readers discard it. Text not yet durable is simply dropped."""
        if self._chunk_span == parent_span_id:
            self._chunk = []
        attributes = {"attempt": attempt}
        # Live readers must hear of it before the next attempt's text, not at the commit.
        self._live("text.reset", "text.reset", parent_span_id, time.time(), attributes)
        self.emit(
            "text.reset",
            "text.reset",
            parent_span_id=parent_span_id,
            attributes=attributes,
            publish=False,
        )

    def _live(
        self, type: str, name: str, span_id: str, at: float, attributes: dict[str, Any]
    ) -> None:
        """A live-only event (seq 0, never stored) for the sinks of this process."""
        if self.sinks:
            self._publish(
                EventRecord(
                    run_id=self.run_id,
                    seq=0,
                    type=type,
                    name=name,
                    trace_id=self.trace_id,
                    span_id=span_id,
                    parent_span_id=span_id,
                    start=at,
                    end=at,
                    attributes=attributes,
                )
            )

    def _close_chunk(self) -> None:
        if not self._chunk:
            return
        text, self._chunk = "".join(self._chunk), []
        # Durable only: live readers already had every piece of it.
        self.emit(
            "text.delta",
            "text",
            parent_span_id=self._chunk_span,
            start=self._chunk_started,
            attributes={"text": text},
            publish=False,
        )

    def _publish(self, event: EventRecord) -> None:
        for sink in self.sinks:
            sink(event)

    def emit(
        self,
        type: str,
        name: str,
        *,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        status: str | None = None,
        attributes: dict[str, Any] | None = None,
        force: bool = False,
        publish: bool = True,
    ) -> EventRecord | None:
        """A durable event, published to live sinks once committed (unless `publish` is
        False: live readers already had its content). `end=None` with a given span_id opens
        a span; a point event (no span_id) gets its own span with start == end."""
        if not force and self.suppressed():
            return None
        self._close_chunk()  # text streamed before this event keeps its place in the order
        now = time.time()
        if span_id is None:
            span_id = random_hex(16)
            start = end = now if start is None else start
        start = now if start is None else start
        parent = parent_span_id
        if parent is None and span_id != self.root_span:
            parent = self.root_span
        event = EventRecord(
            run_id=self.run_id,
            seq=self._next_seq,
            type=type,
            name=name,
            trace_id=self.trace_id,
            span_id=span_id,
            parent_span_id=parent,
            start=start,
            end=end,
            latency_ms=None if end is None else round((end - start) * 1000, 3),
            status=status,
            attributes=attributes or {},
        )
        self._next_seq += 1
        self._buffer.append(event)
        if not publish:
            self._quiet.add(event.seq)
        self._mark_pending()
        return event
