"""Executing one claimed run: lease upkeep, the turn under its deadline, and completion.

The executor owns the run while its lease is current. A background ticker flushes
buffered events and renews the lease; if the lease is lost (another worker took over)
the turn is stopped and nothing more is written. Completion (run status, the turn's
messages appended to the history, the conversation's state and version) is one
transaction, so the history changes exactly once per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from orchestrion.engine.agent import Agent, TurnContext, TurnOutcome, run_turn
from orchestrion.engine.conversation import ConversationState, check_transition
from orchestrion.engine.journal import Journal
from orchestrion.errors import (
    InvalidOutput,
    LeaseLost,
    OrchestrionError,
    RunCancelled,
    StepFailed,
)
from orchestrion.models.messages import Message
from orchestrion.observe.events import Committed, RunEmitter, Sink
from orchestrion.resilience.deadline import deadline
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store.base import EffectRecord, Lease, RunCompletion, RunRecord, Store

log = logging.getLogger("orchestrion.runner")

DEFAULT_LEASE_SECONDS = 30.0
FLUSH_INTERVAL = 0.02  # seconds between background flushes (a commit only when events wait)
CANCEL_POLL = 0.5  # how often the store is asked whether another process cancelled the run


class RunExecutor:
    def __init__(
        self,
        store: Store,
        agent: Agent,
        run: RunRecord,
        lease: Lease,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        sinks: list[Sink] | None = None,
        resumed: bool = False,
        breakers: BreakerRegistry | None = None,
        committed: list[Committed] | None = None,
    ) -> None:
        self.store = store
        self.breakers = breakers or BreakerRegistry(store)
        self.agent = agent
        self.run = run
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.sinks = sinks or []
        self.committed = committed or []
        self.resumed = resumed
        self.journal: Journal | None = None
        self._state = ConversationState.AWAITING_INPUT
        self._cancel_requested = False
        self._turn: asyncio.Task[TurnOutcome] | None = None
        self._lease_lost = False

    async def execute(self) -> str:
        """Run the turn to a terminal status; return it ("lost" if the lease was lost)."""
        store, run = self.store, self.run
        conversation = await store.get_conversation(run.conversation_id)
        self._state = ConversationState(conversation.state)
        history = [Message.model_validate(m) for m in await store.history(run.conversation_id)]
        recorded = await store.load_steps(run.id)
        emitter = RunEmitter(run.id, run.trace_id, next_seq=await store.last_event_seq(run.id) + 1)
        emitter.sinks.extend(self.sinks)
        emitter.committed.extend(self.committed)
        self.emitter = emitter
        journal = Journal(store, self.lease, emitter, recorded, lease_seconds=self.lease_seconds)
        self.journal = journal
        if recorded or self.resumed:
            emitter.emit(
                "run.resumed",
                "resume",
                force=True,
                attributes={
                    "epoch": self.lease.epoch,
                    "owner": self.lease.owner,
                    "recorded_steps": len(recorded),
                },
            )
        else:
            emitter.emit(
                "run.started",
                f"invoke_agent {self.agent.name}",
                span_id=emitter.root_span,
                start=run.started_at or time.time(),
                force=True,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": self.agent.name,
                    "conversation_id": run.conversation_id,
                    "epoch": self.lease.epoch,
                    "owner": self.lease.owner,
                },
            )
        ctx = TurnContext(
            agent=self.agent,
            journal=journal,
            emitter=emitter,
            run_id=run.id,
            conversation_id=run.conversation_id,
            tenant=run.tenant,
            deadline=run.deadline_at,
            history=history,
            user_message=Message.model_validate(run.input["message"]),
            set_state=self._set_state,
            record_effect=self._record_effect,
            breakers=self.breakers,
        )
        turn = asyncio.create_task(self._bounded_turn(ctx))
        self._turn = turn
        if self._cancel_requested:  # cancelled before the turn even started
            turn.cancel()
        ticker = asyncio.create_task(self._tick(turn))
        try:
            try:
                outcome: TurnOutcome | BaseException = await turn
            except asyncio.CancelledError:
                if self._lease_lost:
                    return "lost"
                if not self._cancel_requested:
                    raise
                outcome = RunCancelled("the run was cancelled")
            except LeaseLost:
                return "lost"
            except Exception as exc:
                outcome = exc
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        try:
            return await self._complete(outcome)
        except LeaseLost:
            return "lost"

    async def _bounded_turn(self, ctx: TurnContext) -> TurnOutcome:
        # The turn's deadline is a scope every nested call sees (tools get the time left,
        # model calls bound their HTTP requests by it, retries never sleep past it).
        async with deadline(at=self.run.deadline_at, name=f"turn of {self.agent.name}"):
            return await run_turn(ctx)

    async def _tick(self, turn: asyncio.Task[TurnOutcome]) -> None:
        """Flush buffered events, renew the lease and watch for a cancel request, until
        the turn ends."""
        renew_every = self.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        next_cancel_check = time.monotonic() + CANCEL_POLL
        while not turn.done():
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                if self.emitter.pending:
                    await self.emitter.commit(
                        lambda events: self.store.append_events(self.lease, events)
                    )
                now = time.monotonic()
                cancel = False
                if now >= next_renew:
                    next_renew = now + renew_every
                    cancel = await self.store.renew_lease(
                        self.lease, lease_seconds=self.lease_seconds, now=time.time()
                    )
                elif now >= next_cancel_check:
                    next_cancel_check = now + CANCEL_POLL
                    cancel = (await self.store.get_run(self.run.id)).cancel_requested
                if cancel:
                    self.request_cancel()
            except LeaseLost:
                log.warning("run %s: lease lost to another worker; stopping", self.run.id)
                self._lease_lost = True
                turn.cancel()
                return
            except OrchestrionError as exc:  # a store hiccup: the next tick tries again
                log.warning("run %s: background flush failed: %s", self.run.id, exc)

    def request_cancel(self) -> None:
        """Stop the turn: in-flight model and tool calls are cancelled, and the run ends
        as cancelled with the conversation back to AWAITING_INPUT."""
        if self._cancel_requested:
            return
        self._cancel_requested = True
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()

    async def _set_state(self, new: ConversationState) -> None:
        if self.journal is not None and self.journal.replaying():
            return  # recorded steps already moved the conversation: nothing new happened
        if new == self._state:
            return
        check_transition(self._state, new)
        self.emitter.emit(
            "state.changed",
            f"{self._state} -> {new}",
            force=True,
            attributes={"from": str(self._state), "to": str(new)},
        )
        current = self._state
        await self.emitter.commit(
            lambda events: self.store.set_conversation_state(
                self.lease, self.run.conversation_id, current, new, events
            )
        )
        self._state = new

    async def _record_effect(self, key: str, kind: str, payload: dict[str, Any]) -> bool:
        return await self.store.record_effect(
            EffectRecord(
                idempotency_key=key,
                kind=kind,
                run_id=self.run.id,
                conversation_id=self.run.conversation_id,
                tenant=self.run.tenant,
                payload=payload,
                created_at=time.time(),
            )
        )

    async def _complete(self, outcome: TurnOutcome | BaseException) -> str:
        agent, emitter = self.agent, self.emitter
        now = time.time()
        if isinstance(outcome, TurnOutcome):
            status = "succeeded"
            result: dict[str, Any] = {
                "answer": outcome.answer,
                "usage": outcome.usage.model_dump(),
                "model_calls": outcome.model_calls,
            }
            if outcome.output is not None:
                result["output"] = outcome.output
            error = None
            new_messages = [m.model_dump(mode="json") for m in outcome.new_messages]
            self._move(ConversationState.AWAITING_INPUT)
        else:
            status = "cancelled" if isinstance(outcome, RunCancelled) else "failed"
            error = {"type": _error_type(outcome), "message": str(outcome)}
            result = {"answer": _degradation(agent, outcome) if status == "failed" else ""}
            new_messages = []
            if self._state != ConversationState.AWAITING_INPUT:
                self._move(ConversationState.ERROR_RECOVERY)
                self._move(ConversationState.AWAITING_INPUT)
            log.info("run %s %s: %s", self.run.id, status, error["message"])
        emitter.emit(
            "run.finished",
            f"invoke_agent {agent.name}",
            span_id=emitter.root_span,
            parent_span_id=None,
            start=self.run.started_at or now,
            end=now,
            status="ok" if status == "succeeded" else "error",
            force=True,
            attributes={
                "run.status": status,
                **({"error.type": error["type"]} if error else {}),
                **(
                    {
                        "gen_ai.usage.input_tokens": result["usage"]["input_tokens"],
                        "gen_ai.usage.output_tokens": result["usage"]["output_tokens"],
                    }
                    if status == "succeeded"
                    else {}
                ),
                "answer": result["answer"],
            },
        )
        final_state = str(self._state)
        await emitter.commit(
            lambda events: self.store.complete_run(
                self.lease,
                RunCompletion(
                    status=status,  # type: ignore[arg-type]
                    result=result,
                    error=error,
                    new_messages=new_messages,
                    conversation_state=final_state,
                    events=events,
                ),
                now=now,
            )
        )
        return status

    def _move(self, target: ConversationState) -> None:
        """A state change written with the completion transaction (not on its own)."""
        if target == self._state:
            return
        check_transition(self._state, target)
        self.emitter.emit(
            "state.changed",
            f"{self._state} -> {target}",
            force=True,
            attributes={"from": str(self._state), "to": str(target)},
        )
        self._state = target


def _degradation(agent: Agent, exc: BaseException) -> str:
    """What the user reads when a turn fails: configured words, never a raw error."""
    if isinstance(exc, InvalidOutput):
        return agent.argument_policy.exhausted_message
    return agent.degradation_message


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return exc.error_type
    return type(exc).__name__
