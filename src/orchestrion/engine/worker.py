"""The worker: claims queued runs and orphaned ones, executes them, purges what expired."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from orchestrion.engine.agent import Agent
from orchestrion.engine.owner import owner_is_gone, process_identity
from orchestrion.engine.runner import DEFAULT_LEASE_SECONDS, RunExecutor
from orchestrion.observe.events import Committed, Sink
from orchestrion.observe.logs import bind_run_context
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store.base import Lease, QueueLimits, RunRecord, Store

log = logging.getLogger("orchestrion.worker")


def log_breaker_event(type_: str, attributes: dict[str, Any]) -> None:
    if type_ == "breaker.transition":
        log.warning(
            "breaker %s: %s -> %s",
            attributes.get("breaker"),
            attributes.get("from"),
            attributes.get("to"),
        )


def queue_limits(agent: Agent) -> QueueLimits | None:
    """The fleet-wide limits of an agent's queue, or None when it has none."""
    if agent.max_concurrent_runs is None and agent.max_starts_per_second is None:
        return None
    return QueueLimits(
        agent.name,
        max_running=agent.max_concurrent_runs,
        max_per_second=agent.max_starts_per_second,
    )


class Worker:
    def __init__(
        self,
        store: Store,
        agents: Mapping[str, Agent],
        *,
        concurrency: int = 4,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = 0.2,
        purge_interval: float = 300.0,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.store = store
        # One breaker and one retry budget per dependency for this whole process.
        self.breakers = breakers or BreakerRegistry(store, on_event=log_breaker_event)
        self.agents = agents
        for agent in agents.values():
            queue_limits(agent)  # invalid limits fail here, not in the claim loop
        self.owner = process_identity()
        self.concurrency = max(1, concurrency)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.purge_interval = purge_interval
        self.executed: dict[str, str] = {}  # run id -> terminal status, for reporting
        self.live: dict[str, RunExecutor] = {}  # runs executing in this process now
        self.committed: list[Committed] = []  # told of every committed event batch
        self._active: dict[str, asyncio.Task[str]] = {}
        self._warned_agents: set[str] = set()

    def orphaned(self, run: RunRecord, now: float) -> bool:
        """A running run whose lease expired, or whose owner is provably dead."""
        expired = run.lease_expires_at is None or run.lease_expires_at < now
        return expired or owner_is_gone(run.owner)

    async def claim_next(self) -> tuple[RunRecord, Lease, bool] | None:
        """Claim one run this worker can execute: (run, lease, resumed) or None."""
        now = time.time()
        full: set[str] = set()  # queues at their fleet limit in this pass
        for run in await self.store.claimable_runs(now=now, limit=50):
            if run.id in self._active or run.agent in full:
                continue
            agent = self.agents.get(run.agent)
            if agent is None:
                if run.agent not in self._warned_agents:
                    self._warned_agents.add(run.agent)
                    log.warning(
                        "skipping runs of agent %r: this worker does not know it", run.agent
                    )
                continue
            if run.status == "running" and not self.orphaned(run, now):
                continue
            lease = await self.store.claim(
                run.id,
                owner=self.owner,
                expected_epoch=run.epoch,
                lease_seconds=self.lease_seconds,
                now=now,
                turn_timeout=agent.turn_timeout,
                limits=queue_limits(agent),
            )
            if lease is not None:
                resumed = run.status == "running" or run.started_at is not None
                return await self.store.get_run(run.id), lease, resumed
            if run.status == "queued" and queue_limits(agent) is not None:
                # Lost the race, or the queue is at its limit: either way, its other runs
                # can wait for the next pass; other queues go on.
                full.add(run.agent)
        return None

    async def execute(
        self, run: RunRecord, lease: Lease, *, resumed: bool, sinks: list[Sink] | None = None
    ) -> str:
        executor = RunExecutor(
            self.store,
            self.agents[run.agent],
            run,
            lease,
            lease_seconds=self.lease_seconds,
            sinks=sinks,
            resumed=resumed,
            breakers=self.breakers,
            committed=self.committed,
        )
        if resumed:
            log.info("resuming run %s (epoch %d)", run.id, lease.epoch)
        self.live[run.id] = executor
        try:
            ids = {"conversation_id": run.conversation_id, "trace_id": run.trace_id}
            with bind_run_context(run.id, **ids):  # log lines name the run
                status = await executor.execute()
        finally:
            self.live.pop(run.id, None)
        self.executed[run.id] = status
        return status

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait until a run of ours ends, new work may be claimable (the store's wake-up,
        e.g. PostgreSQL LISTEN/NOTIFY), stop is set, or poll_interval passes."""
        wakers: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if len(self._active) < self.concurrency:
            wakers.append(asyncio.ensure_future(self.store.wait_for_work(self.poll_interval)))
        try:
            await asyncio.wait(
                [*self._active.values(), *wakers],
                timeout=self.poll_interval,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waker in wakers:
                waker.cancel()

    async def run(self, *, drain: bool = False, stop: asyncio.Event | None = None) -> int:
        """Work until stopped; with drain, return once nothing is left that it can do.
        Returns the number of runs executed."""
        stop = stop or asyncio.Event()
        next_purge = time.monotonic() + self.purge_interval
        while not stop.is_set():
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_interval
                report = await self.store.purge_expired(now=time.time())
                if report.conversations:
                    log.info("purged %d expired conversations", report.conversations)
            claimed = None
            if len(self._active) < self.concurrency:
                claimed = await self.claim_next()
            if claimed is not None:
                run, lease, resumed = claimed
                self._active[run.id] = asyncio.create_task(
                    self.execute(run, lease, resumed=resumed)
                )
                continue
            if drain and not self._active:
                break
            await self._idle(stop)
            for run_id, task in list(self._active.items()):
                if task.done():
                    del self._active[run_id]
                    if task.exception() is not None:
                        log.error("run %s crashed the executor", run_id, exc_info=task.exception())
        if self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)
            self._active.clear()
        return len(self.executed)
