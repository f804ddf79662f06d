"""Durable steps: consult the journal before executing; record the result after.

A step that may act on the world (effect "write": a write tool, a compensation) is
recorded at once, and before it runs every lazily recorded step before it is committed,
so the decision that led to it (e.g. the model's tool call) is durable before anything
happens. A read-only step (a model call, a read tool) is recorded lazily: its record
rides with the run's next commit (a write step's, a flush of events that waited 0.02 s,
the completion). A crash can then re-execute a few read-only steps, never a side effect
decided by a step that was not durable. A fast loop of reads costs no commit per step.

A step is addressed by (run id, seq). Seqs are handed out in call order, synchronously,
so a replayed run asks for the same seqs in the same order even when steps run
concurrently. A recorded result is returned without executing; a recorded terminal error
is raised again; a step with no record executes (again) under the same idempotency key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydantic_core

from orchestrion.errors import (
    DeadlineExceeded,
    LeaseLost,
    NonDeterminismError,
    RunCancelled,
    StepFailed,
)
from orchestrion.observe.events import RunEmitter, derived_span_id
from orchestrion.observe.logs import bind_span
from orchestrion.store.base import Lease, StepRecord, Store

# Errors that say nothing about the step itself: never recorded as its outcome, so the
# step executes again when the run resumes.
_NOT_RECORDED = (LeaseLost, RunCancelled, DeadlineExceeded, asyncio.CancelledError)


def idempotency_key(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq}"


@dataclass(frozen=True, slots=True)
class StepInfo:
    seq: int
    name: str
    idempotency_key: str
    span_id: str


class Journal:
    def __init__(
        self,
        store: Store,
        lease: Lease,
        emitter: RunEmitter,
        recorded: dict[int, StepRecord],
        *,
        lease_seconds: float,
    ) -> None:
        self.store = store
        self.lease = lease
        self.emitter = emitter
        self.lease_seconds = lease_seconds
        self._recorded = recorded
        self._last_recorded = max(recorded, default=0)
        self._next_seq = 1
        self.executed = 0  # steps executed by this process (tests count replay with it)
        self.replayed = 0
        # Whether an earlier owner may have started steps past the recorded ones (their
        # retry state is then worth loading); a fresh run's steps have no past.
        self.resumed = bool(recorded)
        emitter.suppressed = self.replaying

    async def commit(self) -> None:
        """Write what is pending (step records, events, a state change) in one fenced
        transaction."""
        lease, store = self.lease, self.store
        await self.emitter.commit(
            lambda p: store.record_steps(
                lease, p.steps, p.events, lease_seconds=self.lease_seconds, state=p.state
            )
        )

    def may_have_attempts(self, seq: int) -> bool:
        """Whether step `seq` may have retry state saved by an earlier owner."""
        return self.resumed and seq > self._last_recorded

    def replaying(self) -> bool:
        """True while the run is still walking through steps a previous owner recorded."""
        return self._next_seq <= self._last_recorded

    def step(
        self,
        name: str,
        fn: Callable[[StepInfo], Awaitable[Any]],
        *,
        decode: Callable[[Any], Any] | None = None,
        attributes: dict[str, Any] | None = None,
        parent_span_id: str | None = None,
        announce: bool = False,
        effect: Literal["read", "write"] = "write",
    ) -> Awaitable[Any]:
        """Reserve the next seq now and return the awaitable that runs the step.

        `fn` receives the step's info (idempotency key, span id) and returns a JSON-able
        value; the caller receives the value as decoded from its JSON form, identical on
        the first execution and on replay. `announce` writes a started event first, so a
        long step shows in live streams and traces while it runs. `effect="read"` lets the
        step be recorded lazily (see the module's docstring).
        """
        seq = self._next_seq
        self._next_seq += 1
        return self._run(
            seq, name, fn, decode, attributes or {}, parent_span_id, announce, effect == "read"
        )

    async def _run(
        self,
        seq: int,
        name: str,
        fn: Callable[[StepInfo], Awaitable[Any]],
        decode: Callable[[Any], Any] | None,
        attributes: dict[str, Any],
        parent_span_id: str | None,
        announce: bool,
        lazy: bool,
    ) -> Any:
        recorded = self._recorded.get(seq)
        if recorded is not None:
            if recorded.name != name:
                raise NonDeterminismError(
                    f"run {self.lease.run_id}, step {seq}: the journal recorded {recorded.name!r} "
                    f"but the code now asks for {name!r}. The agent's code or configuration "
                    "changed under a run in flight; finish such runs before deploying, or "
                    "cancel them."
                )
            self.replayed += 1
            if recorded.status == "error":
                error = pydantic_core.from_json(recorded.error or "{}")
                raise StepFailed(name, error.get("type", "Error"), error.get("message", ""))
            value = pydantic_core.from_json(recorded.result) if recorded.result else None
            return decode(value) if decode is not None else value

        info = StepInfo(
            seq=seq,
            name=name,
            idempotency_key=idempotency_key(self.lease.run_id, seq),
            span_id=derived_span_id(self.lease.run_id, "step", seq),
        )
        attributes = {"step.seq": seq, "idempotency_key": info.idempotency_key, **attributes}
        emitter = self.emitter
        started = time.time()
        if announce:
            emitter.emit(
                "step.started",
                name,
                span_id=info.span_id,
                parent_span_id=parent_span_id,
                start=started,
                attributes=attributes,
            )
        if not lazy and emitter.holds_steps:
            await self.commit()  # what led to this step is durable before it acts
        self.executed += 1
        status, result_json, error_json = "ok", None, None
        try:
            with bind_span(info.span_id):  # log lines inside name this step's span
                value = await fn(info)
            result_json = pydantic_core.to_json(value).decode()
        except _NOT_RECORDED:
            raise
        except Exception as exc:
            status = "error"
            error = {"type": type(exc).__name__, "message": str(exc)}
            error_json = pydantic_core.to_json(error).decode()
            attributes = {**attributes, "error.type": type(exc).__name__}
            failure: Exception | None = StepFailed(name, type(exc).__name__, str(exc))
            failure.__cause__ = exc  # type: ignore[union-attr]
        else:
            failure = None
        finished = time.time()
        emitter.emit(
            "step.finished",
            name,
            span_id=info.span_id,
            parent_span_id=parent_span_id,
            start=started,
            end=finished,
            status=status,
            attributes=attributes,
        )
        record = StepRecord(
            run_id=self.lease.run_id,
            seq=seq,
            name=name,
            status=status,  # type: ignore[arg-type]
            result=result_json,
            error=error_json,
            idempotency_key=info.idempotency_key,
            started_at=started,
            finished_at=finished,
            epoch=self.lease.epoch,
        )
        emitter.add_step(record)
        if not lazy:
            await self.commit()
        if failure is not None:
            raise failure
        value = pydantic_core.from_json(result_json) if result_json else None
        return decode(value) if decode is not None else value
