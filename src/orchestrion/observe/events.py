"""Events: ids, and the per-run emitter that numbers, buffers and fans them out.

Durable events get a per-run sequence number from the run's current owner (only the
lease holder writes a run's events, so no coordination is needed). They are buffered and
written in the next transaction the run makes anyway (a step record), or by the run's
background flusher a fraction of a second later: one commit per step, not per event.
Ephemeral events (text deltas) go to live consumers only and carry seq 0; the text they
carry is made durable as part of the model step's record.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from orchestrion.store.base import EventRecord

Event = EventRecord  # the public name: what a turn's stream yields

# Types whose event closes a span (carries `end`).
SPAN_END_TYPES = frozenset({"run.finished", "step.finished"})


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def derived_span_id(*parts: object) -> str:
    """A span id that is the same in every process: a re-executed step after a crash gets
    the same span as its interrupted first attempt, so the trace tree stays one tree."""
    text = "/".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def run_span_id(run_id: str) -> str:
    return derived_span_id(run_id, "run")


Sink = Callable[[EventRecord], None]


class RunEmitter:
    """Numbers a run's events, buffers the durable ones, and hands all to live sinks."""

    def __init__(self, run_id: str, trace_id: str, *, next_seq: int) -> None:
        self.run_id = run_id
        self.trace_id = trace_id
        self.root_span = run_span_id(run_id)
        self._next_seq = next_seq
        self._buffer: list[EventRecord] = []
        self.sinks: list[Sink] = []
        # While the journal replays recorded steps, their events already exist: drop them.
        self.suppressed: Callable[[], bool] = lambda: False

    def drain(self) -> list[EventRecord]:
        buffered, self._buffer = self._buffer, []
        return buffered

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

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
    ) -> EventRecord | None:
        """A durable event. `end=None` with a given span_id opens a span; a point event
        (no span_id) gets its own span with start == end."""
        if not force and self.suppressed():
            return None
        now = time.time()
        if span_id is None:
            span_id = secrets.token_hex(8)
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
        self._publish(event)
        return event

    def ephemeral(self, type: str, attributes: dict[str, Any], *, parent_span_id: str) -> None:
        """A live-only event (seq 0), e.g. a text delta."""
        if not self.sinks or self.suppressed():
            return
        now = time.time()
        self._publish(
            EventRecord(
                run_id=self.run_id,
                seq=0,
                type=type,
                name=type,
                trace_id=self.trace_id,
                span_id=parent_span_id,
                parent_span_id=parent_span_id,
                start=now,
                end=now,
                attributes=attributes,
            )
        )
