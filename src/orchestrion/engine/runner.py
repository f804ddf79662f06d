"""Executing one claimed run: the turn under its deadline, then its completion.

The executor owns the run while its lease is current. The process's scheduler (the
`Worker`) keeps the lease alive, flushes events that waited, and tells the executor when
the lease was lost (another worker took over: the turn stops and nothing more is
written), when the run was cancelled, or when the process shuts down and hands the run
back. Completion (run status, the turn's messages appended to the history, the
conversation's state and version) is one transaction, so the history changes exactly
once per turn; the turn's end is published to live readers only once that transaction
committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from orchestrion.context.load import load_context
from orchestrion.context.tokens import counter_of
from orchestrion.engine.agent import Agent, TurnContext, TurnOutcome, run_turn
from orchestrion.engine.conversation import ConversationState, check_transition
from orchestrion.engine.journal import Journal
from orchestrion.errors import (
    InvalidOutput,
    LeaseLost,
    RunCancelled,
    StepFailed,
)
from orchestrion.models.messages import Message
from orchestrion.observe.events import Committed, RunEmitter, Sink
from orchestrion.resilience.deadline import deadline
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store.base import (
    EffectRecord,
    Lease,
    RunCompletion,
    RunRecord,
    Store,
    TurnState,
)

log = logging.getLogger("orchestrion.runner")

DEFAULT_LEASE_SECONDS = 30.0

# How an execution ended in this process: a terminal status, "lost" (another worker took
# the run over) or "released" (handed back to the queue at shutdown).
Ending = Literal["succeeded", "failed", "cancelled", "lost", "released"]


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
        on_pending: Callable[[RunEmitter], None] | None = None,
        committed: list[Committed] | None = None,
    ) -> None:
        self.store = store
        self.breakers = breakers or BreakerRegistry(store)
        self.agent = agent
        self.run = run
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.sinks = sinks if sinks is not None else []
        self.resumed = resumed
        self.journal: Journal | None = None
        self.emitter = RunEmitter(run.id, run.trace_id, next_seq=1)
        self.emitter.sinks = self.sinks
        self.emitter.on_pending = on_pending
        self.emitter.committed.extend(committed or [])
        self._state = ConversationState.AWAITING_INPUT
        self._stop: Literal["cancel", "lost", "release"] | None = None
        self._turn: asyncio.Task[TurnOutcome] | None = None

    # ---- what the scheduler tells the executor ---------------------------------------

    def request_cancel(self) -> None:
        """Stop the turn: in-flight model and tool calls are cancelled, and the run ends
        as cancelled with the conversation back to AWAITING_INPUT."""
        self._stop_turn("cancel")

    def lease_lost(self) -> None:
        """Another worker took the run over: stop at once and write nothing more."""
        log.warning("run %s: lease lost to another worker; stopping", self.run.id)
        self._stop_turn("lost")

    def hand_back(self) -> None:
        """Stop the turn and give the run back to the queue (the process shuts down)."""
        self._stop_turn("release")

    def _stop_turn(self, why: Literal["cancel", "lost", "release"]) -> None:
        if self._stop == "lost" or (self._stop is not None and why != "lost"):
            return  # the first reason stands (a lost lease overrides all)
        self._stop = why
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()

    async def flush(self) -> None:
        """Write what waited (a long step's start, streamed text, a state change, the
        records of read-only steps)."""
        if self.journal is not None and self.emitter.pending:
            await self.journal.commit()

    # ---- the execution -----------------------------------------------------------------

    async def execute(self, claimed: TurnState | None = None) -> Ending:
        """Run the turn to a terminal status and return it (or "lost"/"released").
        `claimed`: what the claimer already read (else it is read here)."""
        store, run = self.store, self.run
        state = claimed or await store.load_turn(run.id)
        conversation = state.conversation
        self._state = ConversationState(conversation.state)
        # Only what the agent's context policy needs: a window and a summary, not the
        # whole history (keep_all() reads it all).
        loaded = await load_context(
            store,
            self.agent.context_policy,
            run,
            message_count=conversation.message_count,
            exact=counter_of(self.agent.model),
        )
        recorded = state.steps
        emitter = self.emitter
        emitter.reset_seq(state.last_event_seq + 1)
        journal = Journal(store, self.lease, emitter, recorded, lease_seconds=self.lease_seconds)
        journal.resumed = bool(recorded) or self.resumed
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
            context=loaded,
            user_message=Message.model_validate(run.input["message"]),
            set_state=self._set_state,
            record_effect=self._record_effect,
            breakers=self.breakers,
        )
        turn = asyncio.create_task(self._bounded_turn(ctx))
        self._turn = turn
        if self._stop is not None:  # stopped before the turn even started
            turn.cancel()
        outcome: TurnOutcome | BaseException
        try:
            outcome = await turn
        except asyncio.CancelledError:
            if self._stop is None:
                raise  # the executor itself was cancelled: not ours to decide
            outcome = RunCancelled("the run was cancelled")
        except LeaseLost:
            self._stop = "lost"
            return "lost"
        except Exception as exc:
            outcome = exc
        if self._stop == "lost":
            return "lost"
        if self._stop == "release" and not isinstance(outcome, TurnOutcome):
            return await self._release()
        try:
            return await self._complete(outcome)
        except LeaseLost:
            return "lost"

    async def _bounded_turn(self, ctx: TurnContext) -> TurnOutcome:
        # The turn's deadline is a scope every nested call sees (tools get the time left,
        # model calls bound their HTTP requests by it, retries never sleep past it).
        async with deadline(at=self.run.deadline_at, name=f"turn of {self.agent.name}"):
            return await run_turn(ctx)

    async def _release(self) -> Ending:
        """Hand the run back: it is queued again at its place and resumes elsewhere from
        its journal (events not yet written are dropped: their steps re-execute)."""
        try:
            await self.store.release(self.lease)
        except LeaseLost:
            return "lost"
        return "released"

    async def _set_state(self, new: ConversationState) -> None:
        if self.journal is not None and self.journal.replaying():
            return  # recorded steps already moved the conversation: nothing new happened
        self._move(new)

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

    async def _complete(self, outcome: TurnOutcome | BaseException) -> Ending:
        agent, emitter = self.agent, self.emitter
        now = time.time()
        status: Literal["succeeded", "failed", "cancelled"]
        if isinstance(outcome, TurnOutcome):
            status = "succeeded"
            result: dict[str, Any] = {
                "answer": outcome.answer,
                "usage": outcome.usage.model_dump(),
                "model_calls": outcome.model_calls,
            }
            if outcome.output is not None:
                result["output"] = outcome.output
            if outcome.context:
                result["context"] = outcome.context
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
                **(
                    {"error.type": error["type"], "error.message": error["message"]}
                    if error
                    else {}
                ),
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
            lambda pending: self.store.complete_run(
                self.lease,
                RunCompletion(
                    status=status,
                    result=result,
                    error=error,
                    new_messages=new_messages,
                    conversation_state=final_state,
                    events=pending.events,
                    steps=pending.steps,
                ),
                now=now,
            )
        )
        return status

    def _move(self, target: ConversationState) -> None:
        """A state change: an event now, written with the run's next commit."""
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
        self.emitter.set_state(str(target))


def _degradation(agent: Agent, exc: BaseException) -> str:
    """What the user reads when a turn fails: configured words, never a raw error."""
    if isinstance(exc, InvalidOutput):
        return agent.argument_policy.exhausted_message
    return agent.degradation_message


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, StepFailed):
        return exc.error_type
    return type(exc).__name__
