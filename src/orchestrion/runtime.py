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
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrion.engine.agent import Agent
from orchestrion.engine.conversation import ConversationState, observed_state
from orchestrion.engine.worker import Worker, log_breaker_event
from orchestrion.errors import NotFound, OrchestrionError
from orchestrion.models.base import close_models
from orchestrion.models.messages import Message
from orchestrion.observe.events import new_id, new_trace_id, run_span_id
from orchestrion.observe.public import Event, public_event
from orchestrion.observe.telemetry import telemetry_for
from orchestrion.observe.trace import Span, build_run_tree, conversation_tree
from orchestrion.observe.traceparent import require_traceparent
from orchestrion.reading import (
    HistoryPage,
    TracePage,
    conversation_trace_page,
    history_page,
    run_trace_page,
)
from orchestrion.resilience.settings import BreakerSettings
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store import open_store
from orchestrion.store.base import (
    BusyPolicy,
    ConversationRecord,
    Durability,
    EventRecord,
    NewConversation,
    PurgeReport,
    RunRecord,
    RunStatus,
    Store,
    run_status,
)

POLL_INTERVAL = 0.05  # how often a reader of another process's run looks at the store
SUBSCRIBE_INTERVAL = 0.02  # how often a subscriber looks for newly stored events
NOTIFIED_INTERVAL = 1.0  # the same, when the store wakes readers itself (PostgreSQL)
# Turns this process executes at once (they mostly wait on models and tools).
DEFAULT_CONCURRENCY = 1000


@dataclass
class TurnResult:
    """How a turn ended (or where it is: `queued`, `running`). `answer` is the final
    answer, or for a failed turn the agent's degradation message (never a raw error);
    `error` is {"type", "message"} for a failed or cancelled turn."""

    run_id: str
    conversation_id: str
    status: RunStatus
    answer: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class ConversationInfo:
    """A conversation as it is now. `state` is what it is observed to be: EXPIRED once it
    is past `expires_at` with no turn in flight (it refuses new turns; the purge deletes
    it), CLOSED once closed (it refuses new turns; its history stays readable)."""

    id: str
    tenant: str
    agent: str
    state: ConversationState
    version: int  # bumped once per completed turn
    message_count: int
    created_at: float
    updated_at: float
    expires_at: float


class Orchestrion:
    def __init__(
        self,
        store: str | Store | None = None,
        *,
        agents: Iterable[Agent] = (),
        tenant: str = "default",
        durability: Durability = "normal",
        lease_seconds: float = 30.0,
        breaker_settings: BreakerSettings | Mapping[str, Any] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        """`breaker_settings`: CircuitBreaker settings for every dependency of this process,
        e.g. BreakerSettings(minimum_calls=10, wait_in_open=15) (or the same as a mapping;
        ValueError at once for an unknown key or a bad value); see docs/resilience.md.
        `concurrency`: how many turns this process executes at once (more wait queued).
        `tracer_provider`, `meter_provider`: OpenTelemetry providers to export runs to
        (else the global ones, else the OTEL_* environment); see docs/observability.md."""
        breakers = BreakerSettings.of(breaker_settings)  # bad settings fail before anything opens
        self.store = store if isinstance(store, Store) else open_store(store, durability=durability)
        self.agents: dict[str, Agent] = {}
        for agent in agents:
            self.add_agent(agent)
        self.tenant = tenant
        # The one scheduler of this process: it alone claims and executes runs.
        self.worker = Worker(
            self.store,
            self.agents,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            # Breakers and retry budgets are shared by every process on this store.
            breakers=BreakerRegistry(
                self.store,
                breakers.breaker_kwargs(),
                on_event=log_breaker_event,
                share_budgets=True,
            ),
        )
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
        """Wait for the turns this process is executing or was asked to execute (`start`,
        `stream`), then close what it opened, in order: the scheduler, the breakers and
        budgets (their last counts are published to the store), the models' connections,
        the telemetry export, the store."""
        try:
            await self.worker.close()
            await self.worker.breakers.close()
            await close_models(
                m for a in self.agents.values() for m in (a.model, *a.fallback_models)
            )
            if self.telemetry is not None:
                await self.telemetry.aclose()
        finally:
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
        A conversation that takes no more turns raises ConversationClosed or
        ConversationExpired (both ConversationEnded); NotFound for another tenant's.
        `traceparent` (a W3C header value; default: the caller's current OpenTelemetry
        span, if any) makes the run part of the caller's trace."""
        parent = require_traceparent(traceparent) if traceparent is not None else None
        if parent is None and self.telemetry is not None:
            parent = self.telemetry.ambient_parent()
        a = self._agent(agent)
        tenant = tenant or self.tenant
        conversation_id = conversation or new_id("conv")
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
            new_conversation=NewConversation(
                agent=a.name,
                ttl_seconds=a.conversation_ttl,
                state=ConversationState.AWAITING_INPUT,
            ),
        )

    async def stream(
        self,
        agent: str | Agent,
        message: str,
        *,
        conversation: str | None = None,
        tenant: str | None = None,
        busy_policy: BusyPolicy | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Submit a turn and yield its events live (text deltas included) until it ends."""
        run = await self.submit(
            agent, message, conversation=conversation, tenant=tenant, busy_policy=busy_policy
        )
        # aclosing: a consumer that stops early closes the inner reader at once.
        async with contextlib.aclosing(self.events(run.id)) as events:
            async for event in events:
                yield event

    async def events(self, run_id: str) -> AsyncGenerator[Event, None]:
        """Have this process execute a queued run (as soon as its conversation is free)
        and yield its events until it ends: live while it executes here (streamed text at
        once, every other event once it is durable), from the store if another process
        runs it. The end is reported only once it is durable; if the completion cannot be
        written, its error is raised here."""
        worker = self.worker
        watch = worker.watch(run_id)
        last_seq = 0
        try:
            run = await self.store.get_run(run_id)
            if run.status == "queued":
                worker.want(run.id)
                while True:
                    item = await watch.next()
                    if isinstance(item, EventRecord):
                        if item.seq:
                            last_seq = item.seq
                        yield public_event(item)
                        if item.type == "run.finished":
                            return
                        continue
                    if item.error is not None:
                        raise item.error
                    break  # executed elsewhere (or stopped here): the store has the rest
        finally:
            worker.unwatch(watch)
        async with contextlib.aclosing(self.follow(run_id, after_seq=last_seq)) as stored:
            async for event in stored:
                yield event

    async def follow(
        self, run_id: str, *, after_seq: int = 0, interval: float = POLL_INTERVAL
    ) -> AsyncGenerator[Event, None]:
        """Yield a run's stored events after `after_seq`, polling until the run ends."""
        async with contextlib.aclosing(self._stored(run_id, after_seq, interval)) as stored:
            async for record in stored:
                yield public_event(record)

    async def _stored(
        self, run_id: str, after_seq: int, interval: float
    ) -> AsyncGenerator[EventRecord, None]:
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
        run = await self.submit(agent, message, conversation=conversation, tenant=tenant)
        return await self._wait(run)

    async def wait(self, run_id: str, *, tenant: str | None = None) -> TurnResult:
        """Have this process execute a queued run (as `events` does), wait for its end
        without collecting its events, and return its result. The end is durable when
        this returns; if the completion cannot be written, its error is raised."""
        return await self._wait(await self.store.get_run(run_id, tenant=tenant))

    async def _wait(self, run: RunRecord) -> TurnResult:
        run_id = run.id
        if run.status == "queued":
            watch = self.worker.watch(run_id, events=False)
            try:
                self.worker.want(run_id)
                ended = await watch.next()
            finally:
                self.worker.unwatch(watch)
            assert not isinstance(ended, EventRecord)
            if ended.error is not None:
                raise ended.error
            if ended.where == "here":
                return await self.result(run_id)
        async with contextlib.aclosing(self.follow(run_id)) as stored:
            async for _ in stored:
                pass  # another process executes it: its end is in the store
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
            status=run_status(run.status),
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
        """Have this process execute a queued run in the background as soon as its
        conversation is free (fire-and-forget: read its events with `subscribe`)."""
        self.worker.want(run_id)

    async def subscribe(
        self, run_id: str, *, after_seq: int = 0, tenant: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Every durable event of a run after `after_seq`, exactly once and in order,
        until the run ends; works across processes and restarts (it reads the store).
        Text arrives as coalesced `text.delta` chunks; `text.reset` voids the text of
        its step so far."""
        await self.store.get_run(run_id, tenant=tenant)  # NotFound for others' runs
        # A store that announces new events needs polling only as a safety net.
        interval = NOTIFIED_INTERVAL if self.store.notifies_events else SUBSCRIBE_INTERVAL
        followed = self.follow(run_id, after_seq=after_seq, interval=interval)
        async with contextlib.aclosing(followed) as events:
            async for event in events:
                yield event

    # ---- conversations --------------------------------------------------------------

    async def conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> ConversationInfo:
        """The conversation and its state (NotFound for an unknown id, or another
        tenant's when `tenant` is given)."""
        record = await self.store.get_conversation(conversation_id, tenant=tenant)
        return await self.conversation_info(record)

    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> ConversationInfo:
        """Close a conversation: it takes no more turns (`submit`, `stream` and `send`
        raise ConversationClosed), and its history, runs and traces stay readable until
        it expires and is purged. Closing a closed conversation does nothing. While a
        turn is queued or running the close is refused with ConversationBusy (cancel the
        turn, or wait for it to end, then close): a turn is never cut short by a close.
        NotFound for an unknown id, or another tenant's when `tenant` is given."""
        record = await self.store.close_conversation(
            conversation_id, tenant=tenant, now=time.time()
        )
        return await self.conversation_info(record)

    async def conversation_info(self, record: ConversationRecord) -> ConversationInfo:
        """The public view of a stored conversation (its state as observed now)."""
        now = time.time()
        in_flight = False
        if record.expires_at < now and record.state != ConversationState.CLOSED:
            # Past its expiry: expired only if no turn is in flight (that turn's end
            # refreshes the expiry).
            active = await self.store.list_runs(
                conversation_id=record.id, status=("queued", "running"), limit=1
            )
            in_flight = bool(active)
        return ConversationInfo(
            id=record.id,
            tenant=record.tenant,
            agent=record.agent,
            state=observed_state(
                record.state, expires_at=record.expires_at, now=now, turn_in_flight=in_flight
            ),
            version=record.version,
            message_count=record.message_count,
            created_at=record.created_at,
            updated_at=record.updated_at,
            expires_at=record.expires_at,
        )

    # ---- reading ------------------------------------------------------------------------

    async def history(
        self,
        conversation_id: str,
        *,
        tenant: str | None = None,
        limit: int | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> HistoryPage:
        """The conversation's messages, oldest first (a list). Without `limit`: all of them.
        With `limit`, one page, read through the index: the newest `limit` messages (before
        the index `before`), or with `after` the first `limit` after that index. Indexes
        are positions in the history, from 0; `page.start` is the first message's, and
        `page.next` the arguments of the next page in the same direction (None at the end):

            page = await orx.history(conversation_id, limit=100)
            while page.next:
                page = await orx.history(conversation_id, limit=100, **page.next)
        """
        await self.store.get_conversation(conversation_id, tenant=tenant)
        return await history_page(
            self.store, conversation_id, limit=limit, before=before, after=after
        )

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
        events = await self.store.read_events_of([r.id for r in runs])
        return conversation_tree([(r, events[r.id]) for r in runs])

    async def run_trace(
        self,
        run_id: str,
        *,
        tenant: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> TracePage:
        """The span tree of a run's events after seq `after`, at most `limit` of them.
        A span whose events straddle two pages is on both (merge by span_id); a span whose
        parent is on an earlier page is a root of its page. `page.next` continues, and
        `page.last_seq` is where to follow the run's events live."""
        run = await self.store.get_run(run_id, tenant=tenant)
        return await run_trace_page(self.store, run, after=after, limit=limit)

    async def conversation_trace(
        self,
        conversation_id: str,
        *,
        tenant: str | None = None,
        limit: int = 20,
        before: str | None = None,
        after: str | None = None,
        max_events: int | None = None,
    ) -> TracePage:
        """The span trees of a page of the conversation's runs (one root per run, oldest
        first): the newest `limit` runs (before the run id `before`), or with `after` the
        first `limit` after that run. With `max_events`, a page ends after the run that
        brings it to that many events. `page.next` reads the next page, same direction."""
        await self.store.get_conversation(conversation_id, tenant=tenant)
        return await conversation_trace_page(
            self.store,
            conversation_id,
            tenant=tenant,
            limit=limit,
            before=before,
            after=after,
            max_events=max_events,
        )

    # ---- operations ---------------------------------------------------------------------

    async def work(
        self,
        *,
        drain: bool = False,
        stop: asyncio.Event | None = None,
        grace: float | None = 30.0,
        hurry: asyncio.Event | None = None,
    ) -> int:
        """Be a worker: execute queued and orphaned runs of this process's agents, until
        `stop` is set (or, with `drain`, until nothing is left that it can do). On stop,
        runs in flight get `grace` seconds to finish (`hurry` cuts it short); the rest go
        back to the queue for another worker. Returns how many runs ended here."""
        return await self.worker.run(drain=drain, stop=stop, grace=grace, hurry=hurry)

    async def purge(self) -> PurgeReport:
        return await self.store.purge_expired(now=time.time())


__all__ = ["ConversationInfo", "Orchestrion", "OrchestrionError", "TurnResult"]
