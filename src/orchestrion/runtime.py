"""The public entry point: a store plus the agents this process knows.

    async with Orchestrion("sqlite:///app.db", agents=[agent]) as orx:
        async for event in orx.stream("support", "Hello", conversation="c1"):
            ...

A turn is submitted as a queued run, then executed here when the conversation is free
(or by a worker, if one claims it first). Either way the caller's stream sees the same
events, and the turn goes on if the caller stops listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrion.engine.agent import Agent, BusyPolicy
from orchestrion.engine.conversation import ConversationState
from orchestrion.engine.worker import Worker, log_breaker_event, queue_limits
from orchestrion.errors import NotFound, OrchestrionError
from orchestrion.models.messages import Message
from orchestrion.observe.events import Event, new_id, new_trace_id, run_span_id
from orchestrion.observe.telemetry import telemetry_for
from orchestrion.observe.trace import Span, build_run_tree, conversation_tree
from orchestrion.observe.traceparent import require_traceparent
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store import open_store
from orchestrion.store.base import (
    Durability,
    EventRecord,
    PurgeReport,
    RunRecord,
    Store,
)

POLL_INTERVAL = 0.05  # how often a waiting caller looks at the store
SUBSCRIBE_INTERVAL = 0.02  # how often a subscriber looks for newly stored events
NOTIFIED_INTERVAL = 1.0  # the same, when the store wakes readers itself (PostgreSQL)
# A queued run nobody claimed for this long, blocking a newer turn, is taken over.
ABANDONED_AFTER = 2.0


@dataclass
class TurnResult:
    run_id: str
    conversation_id: str
    status: str
    answer: str
    error: dict[str, Any] | None = None


class Orchestrion:
    def __init__(
        self,
        store: str | Store | None = None,
        *,
        agents: Iterable[Agent] = (),
        tenant: str = "default",
        durability: Durability = "normal",
        lease_seconds: float = 30.0,
        breaker_settings: Mapping[str, Any] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        """`breaker_settings`: CircuitBreaker settings for every dependency of this process
        (e.g. {"minimum_calls": 10, "wait_in_open": 15}); see docs/resilience.md.
        `tracer_provider`, `meter_provider`: OpenTelemetry providers to export runs to
        (else the global ones, else the OTEL_* environment); see docs/observability.md."""
        self.store = store if isinstance(store, Store) else open_store(store, durability=durability)
        self.agents: dict[str, Agent] = {}
        for agent in agents:
            self.add_agent(agent)
        self.tenant = tenant
        self.worker = Worker(
            self.store,
            self.agents,
            lease_seconds=lease_seconds,
            # Breakers and retry budgets are shared by every process on this store.
            breakers=BreakerRegistry(
                self.store, breaker_settings, on_event=log_breaker_event, share_budgets=True
            ),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.telemetry = telemetry_for(
            self, tracer_provider=tracer_provider, meter_provider=meter_provider
        )

    def add_agent(self, agent: Agent) -> None:
        if agent.name in self.agents:
            raise ValueError(f"two agents are named {agent.name!r}")
        self.agents[agent.name] = agent

    async def open(self) -> Orchestrion:
        await self.store.open()
        return self

    async def close(self) -> None:
        """Wait for turns this process is executing, then close the store."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.telemetry is not None:
            await self.telemetry.aclose()
        await self.store.close()

    async def __aenter__(self) -> Orchestrion:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _agent(self, agent: str | Agent) -> Agent:
        name = agent if isinstance(agent, str) else agent.name
        if name not in self.agents:
            if isinstance(agent, Agent):
                self.add_agent(agent)
            else:
                known = ", ".join(sorted(self.agents)) or "none"
                raise NotFound(f"unknown agent {name!r}; known agents: {known}")
        return self.agents[name]

    # ---- turns ------------------------------------------------------------------------

    async def submit(
        self,
        agent: str | Agent,
        message: str,
        *,
        conversation: str | None = None,
        tenant: str | None = None,
        busy_policy: BusyPolicy | None = None,
        traceparent: str | None = None,
    ) -> RunRecord:
        """Queue a turn; it runs when its conversation is free. Returns the queued run.

        When the conversation is busy: "enqueue" (default) waits behind the active run,
        "reject" raises ConversationBusy, "interrupt" cancels the active run first.
        `traceparent` (a W3C header value; default: the caller's current OpenTelemetry
        span, if any) makes the run part of the caller's trace."""
        parent = require_traceparent(traceparent) if traceparent is not None else None
        if parent is None and self.telemetry is not None:
            parent = self.telemetry.ambient_parent()
        a = self._agent(agent)
        tenant = tenant or self.tenant
        conversation_id = conversation or new_id("conv")
        await self.store.ensure_conversation(
            conversation_id,
            tenant=tenant,
            agent=a.name,
            ttl_seconds=a.conversation_ttl,
            state=ConversationState.AWAITING_INPUT,
        )
        run_id = new_id("run")
        trace_id = parent.trace_id if parent is not None else new_trace_id()
        now = time.time()
        queued = EventRecord(
            run_id=run_id,
            seq=1,
            type="run.queued",
            name="queued",
            trace_id=trace_id,
            span_id=new_id("q")[2:],
            parent_span_id=run_span_id(run_id),
            start=now,
            end=now,
            attributes={
                "conversation_id": conversation_id,
                "agent": a.name,
                **({"traceparent": parent.header} if parent is not None else {}),
            },
        )
        policy = busy_policy or a.busy_policy
        if policy == "interrupt":
            for active in await self.store.list_runs(conversation_id=conversation_id, limit=50):
                if active.status in ("queued", "running"):
                    await self.cancel(active.id, tenant=tenant)
            policy = "enqueue"
        return await self.store.create_run(
            run_id=run_id,
            conversation_id=conversation_id,
            tenant=tenant,
            agent=a.name,
            input={"message": Message.user(message).model_dump(mode="json")},
            trace_id=trace_id,
            deadline_at=None,
            busy_policy=policy,
            event=queued,
        )

    async def stream(
        self,
        agent: str | Agent,
        message: str,
        *,
        conversation: str | None = None,
        tenant: str | None = None,
        busy_policy: BusyPolicy | None = None,
    ) -> AsyncIterator[Event]:
        """Submit a turn and yield its events live (text deltas included) until it ends."""
        run = await self.submit(
            agent, message, conversation=conversation, tenant=tenant, busy_policy=busy_policy
        )
        async for event in self.events(run.id):
            yield event

    async def events(self, run_id: str) -> AsyncIterator[Event]:
        """Drive a queued run here if nobody else does, yielding its events until it ends.
        If a worker runs it instead, its stored events are followed."""
        queue: asyncio.Queue[EventRecord | None] = asyncio.Queue()
        driver = asyncio.create_task(self._drive(run_id, queue))
        self._tasks.add(driver)
        driver.add_done_callback(self._tasks.discard)
        last_seq = 0
        while True:
            event = await queue.get()
            if event is None:
                break
            if event.seq:
                last_seq = event.seq
            yield event
            if event.type == "run.finished":
                return
        if driver.done() and driver.exception() is not None:
            raise driver.exception()  # type: ignore[misc]
        async for event in self.follow(run_id, after_seq=last_seq):
            yield event

    async def _drive(
        self, run_id: str, queue: asyncio.Queue[EventRecord | None], *, live: bool = True
    ) -> None:
        """Claim the run as soon as it heads its conversation's queue, then execute it."""
        try:
            while True:
                run = await self.store.get_run(run_id)
                if run.status != "queued":
                    return  # someone else took it (or it was cancelled): follow the store
                agent = self.agents[run.agent]
                lease = await self.store.claim(
                    run_id,
                    owner=self.worker.owner,
                    expected_epoch=run.epoch,
                    lease_seconds=self.worker.lease_seconds,
                    now=time.time(),
                    turn_timeout=agent.turn_timeout,
                    limits=queue_limits(agent),
                )
                if lease is not None:
                    claimed = await self.store.get_run(run_id)
                    await self.worker.execute(
                        claimed, lease, resumed=False, sinks=[queue.put_nowait] if live else []
                    )
                    return
                if not await self._heal(run.conversation_id):
                    await asyncio.sleep(POLL_INTERVAL)
        finally:
            queue.put_nowait(None)

    async def _heal(self, conversation_id: str) -> bool:
        """Unblock this conversation when the run ahead of ours is abandoned: running with
        a dead owner (or an expired lease), or queued by a caller that died before it
        claimed it. The run is executed here rather than waiting for a worker.
        Returns whether it executed one."""
        now = time.time()
        active = [
            r
            for r in await self.store.list_runs(conversation_id=conversation_id, limit=50)
            if r.status in ("queued", "running")
        ]
        if not active:
            return False
        head = min(active, key=lambda r: r.position)
        agent = self.agents.get(head.agent)
        if agent is None:
            return False
        if head.status == "running" and not self.worker.orphaned(head, now):
            return False
        if head.status == "queued" and now - head.created_at < ABANDONED_AFTER:
            return False  # its own caller is probably about to claim it
        lease = await self.store.claim(
            head.id,
            owner=self.worker.owner,
            expected_epoch=head.epoch,
            lease_seconds=self.worker.lease_seconds,
            now=now,
            turn_timeout=agent.turn_timeout,
            limits=queue_limits(agent),
        )
        if lease is None:
            return False
        resumed = head.status == "running" or head.started_at is not None
        await self.worker.execute(await self.store.get_run(head.id), lease, resumed=resumed)
        return True

    async def follow(
        self, run_id: str, *, after_seq: int = 0, interval: float = POLL_INTERVAL
    ) -> AsyncIterator[Event]:
        """Yield a run's stored events after `after_seq`, polling until the run ends."""
        while True:
            events = await self.store.read_events(run_id, after_seq=after_seq)
            for event in events:
                after_seq = event.seq
                yield event
                if event.type == "run.finished":
                    return
            if not events:
                run = await self.store.get_run(run_id)
                if run.terminal and not await self.store.read_events(run_id, after_seq=after_seq):
                    return  # ended (its last event was already read, or it never started)
                await self.store.wait_for_events(run_id, interval)

    async def send(
        self,
        agent: str | Agent,
        message: str,
        *,
        conversation: str | None = None,
        tenant: str | None = None,
    ) -> TurnResult:
        """Run one turn to its end and return the answer (never raises for a failed turn:
        the result says so, with the degradation answer)."""
        run_id = ""
        async for event in self.stream(agent, message, conversation=conversation, tenant=tenant):
            run_id = event.run_id
        return await self.result(run_id)

    def send_sync(self, agent: str | Agent, message: str, **kwargs: Any) -> TurnResult:
        """Blocking wrapper of `send` for scripts (opens and closes the store)."""

        async def main() -> TurnResult:
            async with self:
                return await self.send(agent, message, **kwargs)

        return asyncio.run(main())

    async def result(self, run_id: str, *, tenant: str | None = None) -> TurnResult:
        run = await self.store.get_run(run_id, tenant=tenant)
        return TurnResult(
            run_id=run.id,
            conversation_id=run.conversation_id,
            status=run.status,
            answer=(run.result or {}).get("answer", ""),
            error=run.error,
        )

    async def cancel(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        """Cancel a run: a queued one at once; a running one stops its model and tool
        calls and ends as cancelled (at once when it runs in this process, within a
        fraction of a second when another process runs it)."""
        run = await self.store.request_cancel(run_id, tenant=tenant)
        executor = self.worker.live.get(run_id)
        if executor is not None:
            executor.request_cancel()
        return run

    def start(self, run_id: str) -> None:
        """Execute a queued run in the background of this process as soon as its
        conversation is free (fire-and-forget: read its events with `subscribe`)."""
        queue: asyncio.Queue[EventRecord | None] = asyncio.Queue(maxsize=0)
        driver = asyncio.create_task(self._drive(run_id, queue, live=False))
        self._tasks.add(driver)
        driver.add_done_callback(self._tasks.discard)

    async def subscribe(
        self, run_id: str, *, after_seq: int = 0, tenant: str | None = None
    ) -> AsyncIterator[Event]:
        """Every durable event of a run after `after_seq`, exactly once and in order,
        until the run ends; works across processes and restarts (it reads the store).
        Text arrives as coalesced `text.delta` chunks; `text.reset` voids the text of
        its step so far."""
        await self.store.get_run(run_id, tenant=tenant)  # NotFound for others' runs
        # A store that announces new events needs polling only as a safety net.
        interval = NOTIFIED_INTERVAL if self.store.notifies_events else SUBSCRIBE_INTERVAL
        async for event in self.follow(run_id, after_seq=after_seq, interval=interval):
            yield event

    # ---- reading ------------------------------------------------------------------------

    async def history(self, conversation_id: str, *, tenant: str | None = None) -> list[Message]:
        await self.store.get_conversation(conversation_id, tenant=tenant)
        return [Message.model_validate(m) for m in await self.store.history(conversation_id)]

    async def trace(self, id: str, *, tenant: str | None = None) -> list[Span]:
        """The span tree of a run, or of every run of a conversation."""
        with contextlib.suppress(NotFound):
            run = await self.store.get_run(id, tenant=tenant)
            return build_run_tree(await self.store.read_events(run.id))
        try:
            await self.store.get_conversation(id, tenant=tenant)
        except NotFound:
            raise NotFound(f"no run or conversation with id {id!r}") from None
        runs = await self.store.list_runs(conversation_id=id, limit=10_000)
        pairs = [(r, await self.store.read_events(r.id)) for r in runs]
        return conversation_tree(pairs)

    # ---- operations ---------------------------------------------------------------------

    async def work(self, *, drain: bool = False, stop: asyncio.Event | None = None) -> int:
        """Be a worker: execute queued and orphaned runs. Returns how many it executed."""
        return await self.worker.run(drain=drain, stop=stop)

    async def purge(self) -> PurgeReport:
        return await self.store.purge_expired(now=time.time())


__all__ = ["Orchestrion", "OrchestrionError", "TurnResult"]
