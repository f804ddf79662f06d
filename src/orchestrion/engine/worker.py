"""The scheduler of a process: it alone claims runs, executes them, and keeps them alive.

Two kinds of demand feed it:

- runs that callers in this process wait for (`Orchestrion.stream/send/start` "want" a
  run): claimed as soon as they head their conversation's queue; an abandoned run ahead
  of them (its owner dead, or queued by a caller that died) is taken over and finished
  first;
- worker mode (`Worker.run`, `orchestrion worker`): any eligible run of an agent this
  process knows, oldest first, and orphaned runs (lease expired, or owner provably dead).

Waiting costs nothing: between passes the scheduler sleeps until something may have
changed (a run of this process ended, a caller wants a run, the store's wake-up such as
PostgreSQL NOTIFY, or a slow safety poll). One upkeep task serves every run executing
here: it renews their leases in one transaction, looks for cancellations made elsewhere
in one read, and writes events that waited too long (a long step's start, streamed text);
a fast step's events are written with the step itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestrion.engine.agent import Agent
from orchestrion.engine.owner import owner_host, owner_is_gone, process_identity
from orchestrion.engine.runner import DEFAULT_LEASE_SECONDS, Ending, RunExecutor
from orchestrion.errors import LeaseLost, OrchestrionError
from orchestrion.observe.events import Committed, RunEmitter, Sink
from orchestrion.observe.logs import bind_run_context
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store.base import EventRecord, Lease, QueueLimits, RunRecord, Store, TurnState

log = logging.getLogger("orchestrion.worker")

SAFETY_POLL = 1.0  # the longest the scheduler sleeps without looking at the store
UPKEEP_TICK = 0.02  # how often the upkeep looks at the runs executing here
FLUSH_AFTER = 0.02  # events that waited this long are written on their own
CANCEL_POLL = 0.5  # how often cancellations made by other processes are looked for
ORPHAN_SCAN = 2.0  # how often a worker looks for runs whose owner died
# A queued run at the head of its conversation that nobody claimed for this long, while a
# caller here waits behind it, is taken over (its own caller probably died).
ABANDONED_AFTER = 2.0


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


@dataclass(slots=True)
class _Ended:
    """How an execution of the watched run ended in this process: `here` (its end event
    was published), `elsewhere` (another process has it: read the store), or an error."""

    where: Literal["here", "elsewhere"]
    error: BaseException | None = None


class RunWatch:
    """A live reader of one run in this process: its events once committed (streamed text
    at once), then how its execution here ended."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._queue: asyncio.Queue[EventRecord | _Ended] = asyncio.Queue()

    def put(self, event: EventRecord) -> None:
        self._queue.put_nowait(event)

    def end(self, where: Literal["here", "elsewhere"], error: BaseException | None = None) -> None:
        self._queue.put_nowait(_Ended(where, error))

    async def next(self) -> EventRecord | _Ended:
        return await self._queue.get()


class Worker:
    def __init__(
        self,
        store: Store,
        agents: Mapping[str, Agent],
        *,
        concurrency: int = 4,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        poll_interval: float = SAFETY_POLL,
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
        self.counts: collections.Counter[str] = collections.Counter()  # endings, by kind
        self.live: dict[str, RunExecutor] = {}  # runs executing in this process now
        self.committed: list[Committed] = []  # told of every committed event batch
        self._tasks: dict[str, asyncio.Task[Ending]] = {}
        self._wanted: dict[str, float] = {}  # run id -> when a caller here asked for it
        self._sinks: dict[str, list[Sink]] = {}  # run id -> live sinks of its watches
        self._watches: dict[str, list[RunWatch]] = {}
        self._serving = 0  # callers of run(): claim any eligible run, not only wanted ones
        self._generation = 0  # bumped when worker mode starts (drain needs a fresh pass)
        self._quiet = asyncio.Event()  # a worker-mode pass found nothing and nothing runs
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None
        self._dirty: dict[RunEmitter, RunExecutor] = {}
        self._closing = False
        self._next_orphan_scan = 0.0
        self._orphans: list[RunRecord] = []  # found by the last scan, not yet tried
        self._next_purge = time.monotonic() + purge_interval
        self._warned_agents: set[str] = set()
        self._settled: list[asyncio.Future[None]] = []  # waiting for no wanted, no tasks

    def _check_settled(self) -> None:
        if self._settled and not self._wanted and not self._tasks:
            for waiter in self._settled:
                if not waiter.done():
                    waiter.set_result(None)
            self._settled.clear()

    # ---- demand ---------------------------------------------------------------------

    def want(self, run_id: str) -> None:
        """Execute this queued run here as soon as it heads its conversation's queue (a
        run that is not queued, or not known, is simply dropped at the next pass)."""
        if run_id in self._tasks or self._closing:
            return
        self._wanted.setdefault(run_id, time.time())
        self._ensure_scheduler()
        self._wake.set()

    def watch(self, run_id: str, *, events: bool = True) -> RunWatch:
        """Receive a run's events live if it executes in this process, then how its
        execution here ended (see RunWatch); with `events=False`, only the ending."""
        watch = RunWatch(run_id)
        self._watches.setdefault(run_id, []).append(watch)
        if events:
            self._sinks.setdefault(run_id, []).append(watch.put)
        return watch

    def unwatch(self, watch: RunWatch) -> None:
        """The reader left: nothing more is queued for it."""
        watches = self._watches.get(watch.run_id, [])
        if watch in watches:
            watches.remove(watch)
        sinks = self._sinks.get(watch.run_id, [])
        if watch.put in sinks:
            sinks.remove(watch.put)
        if not watches:
            self._watches.pop(watch.run_id, None)
            if watch.run_id not in self.live:
                self._sinks.pop(watch.run_id, None)

    def _end_watches(
        self, run_id: str, where: Literal["here", "elsewhere"], error: BaseException | None = None
    ) -> None:
        for watch in self._watches.get(run_id, []):
            watch.end(where, error)

    def orphaned(self, run: RunRecord, now: float) -> bool:
        """A running run whose lease expired, or whose owner is provably dead."""
        expired = run.lease_expires_at is None or run.lease_expires_at < now
        return expired or owner_is_gone(run.owner)

    # ---- claiming (the one claim path) ------------------------------------------------

    async def _claim(self, run: RunRecord, now: float) -> Lease | None:
        """Claim a queued run, or take over an orphaned running one."""
        agent = self.agents.get(run.agent)
        if agent is None:
            if run.agent not in self._warned_agents:
                self._warned_agents.add(run.agent)
                log.warning("skipping runs of agent %r: this process does not know it", run.agent)
            return None
        dead_owner = None
        if run.status == "running":
            if run.owner == self.owner or not self.orphaned(run, now):
                return None
            dead_owner = run.owner if owner_is_gone(run.owner) else None
        return await self.store.claim(
            run.id,
            owner=self.owner,
            expected_epoch=run.epoch,
            lease_seconds=self.lease_seconds,
            now=now,
            turn_timeout=agent.turn_timeout,
            limits=queue_limits(agent),
            dead_owner=dead_owner,
        )

    async def _claim_any(self, now: float) -> tuple[RunRecord, Lease, bool] | None:
        """Worker mode: claim one run: an orphan (looked for now and then), else the oldest
        eligible queued run (one atomic dequeue for queues without limits; queues with
        limits go through their checked claim). (run, lease, resumed) or None."""
        if time.monotonic() >= self._next_orphan_scan:
            self._next_orphan_scan = time.monotonic() + ORPHAN_SCAN
            self._orphans = [
                run
                for run in await self.store.orphan_candidates(
                    now=now, owner_prefix=owner_host(self.owner) + "/", limit=100
                )
                if run.id not in self._tasks and run.agent in self.agents
            ]
        while self._orphans:
            run = self._orphans.pop(0)
            if self.orphaned(run, now) and (lease := await self._claim(run, now)) is not None:
                return run, lease, True
        unlimited = {
            name: agent.turn_timeout
            for name, agent in self.agents.items()
            if queue_limits(agent) is None
        }
        got = await self.store.claim_next(
            owner=self.owner, turn_timeouts=unlimited, lease_seconds=self.lease_seconds, now=now
        )
        if got is not None:
            lease, run = got
            return run, lease, run.epoch > 1
        limits = [q for q in (queue_limits(a) for a in self.agents.values()) if q is not None]
        if limits:
            queues = [q.queue for q in limits]
            for run in await self.store.next_claimable(agents=queues, limits=limits, limit=5):
                if run.id not in self._tasks and (lease := await self._claim(run, now)):
                    return run, lease, _resumed(run)
        return None

    async def claim_next(self) -> tuple[RunRecord, Lease, bool] | None:
        """Claim one run as a worker would: (run, lease, resumed), or None."""
        self._next_orphan_scan = 0.0
        claimed = await self._claim_any(time.time())
        if claimed is None:
            return None
        run, lease, resumed = claimed
        return await self.store.get_run(run.id), lease, resumed

    async def _claim_wanted(self, now: float, capacity: int) -> int:
        """Claim the wanted runs that head their conversation, or what blocks them when it
        is abandoned. Returns how many executions started."""
        waiting = [rid for rid in self._wanted if rid not in self._tasks]
        if not waiting:
            return 0
        records = {r.id: r for r in await self.store.queue_heads(waiting)}
        heads: dict[str, RunRecord] = {}
        for record in records.values():
            if record.status in ("queued", "running"):
                current = heads.get(record.conversation_id)
                if current is None or record.position < current.position:
                    heads[record.conversation_id] = record
        started = 0
        for run_id in waiting:
            if started >= capacity:
                break
            own = records.get(run_id)
            if own is None or own.status != "queued":
                # Ended (cancelled), unknown, or another process runs it: its readers
                # follow the store.
                self._wanted.pop(run_id, None)
                self._end_watches(run_id, "elsewhere")
                self._check_settled()
                continue
            head = heads.get(own.conversation_id)
            if head is None or head.id in self._tasks:
                continue  # our own execution of the run ahead will wake us when it ends
            if head.status == "queued" and head.id != run_id:
                abandoned = now - head.created_at >= ABANDONED_AFTER
                if not (abandoned or self._serving or head.id in self._wanted):
                    continue  # its own caller is probably about to claim it
            lease = await self._claim(head, now)
            if lease is not None:
                self._start(head, lease)
                started += 1
        return started

    # ---- the scheduler loop ----------------------------------------------------------

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.create_task(self._schedule(), name="orchestrion-scheduler")

    async def _schedule(self) -> None:
        while not self._closing:
            try:
                progressed = await self._pass()
            except OrchestrionError as exc:
                progressed = False
                self._store_failed(exc)
            if progressed:
                continue
            if not self._wanted and not self._serving and not self._tasks:
                return  # no demand: want() and run() start the scheduler again
            await self._idle()

    def _store_failed(self, exc: OrchestrionError) -> None:
        """The store failed during a pass: the callers waiting here hear of it (a worker
        keeps trying; its runs wait in the store)."""
        log.error("scheduling failed: %s", exc)
        for run_id in list(self._wanted):
            self._wanted.pop(run_id)
            self._end_watches(run_id, "elsewhere", exc)
        self._check_settled()

    async def _pass(self) -> bool:
        """One look at the store; returns whether an execution started."""
        self._wake.clear()  # a wake-up from now on means another pass
        generation = self._generation
        now = time.time()
        capacity = self.concurrency - len(self._tasks)
        if capacity <= 0:
            return False
        started = await self._claim_wanted(now, capacity) if self._wanted else 0
        if self._serving:
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + self.purge_interval
                report = await self.store.purge_expired(now=now)
                if report.conversations:
                    log.info("purged %d expired conversations", report.conversations)
            while started < capacity:
                claimed = await self._claim_any(now)
                if claimed is None:
                    break
                run, lease, resumed = claimed
                self._start(run, lease, resumed)
                started += 1
            if not started and not self._tasks and generation == self._generation:
                self._quiet.set()
        return started > 0

    async def _idle(self) -> None:
        """Sleep until something may have changed, or the safety poll."""
        if self._wake.is_set():
            return
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if len(self._tasks) < self.concurrency:
            waiters.append(asyncio.ensure_future(self.store.wait_for_work(self.poll_interval)))
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiter

    # ---- executions ------------------------------------------------------------------

    def _start(self, run: RunRecord, lease: Lease, resumed: bool | None = None) -> None:
        """Execute a run just claimed (`resumed`: it ran before; default: judged from the
        record as it was before the claim)."""
        self._wanted.pop(run.id, None)
        self._quiet.clear()
        resumed = _resumed(run) if resumed is None else resumed
        task = asyncio.create_task(
            self._execute_claimed(run, lease, resumed), name=f"orchestrion-run-{run.id}"
        )
        self._tasks[run.id] = task
        task.add_done_callback(functools.partial(self._finished, run.id))

    async def _execute_claimed(self, run: RunRecord, lease: Lease, resumed: bool) -> Ending:
        # The claim changed the record (status, owner, epoch, deadline): read it back, with
        # what the executor needs, at once.
        turn = await self.store.load_turn(run.id)
        return await self.execute(turn.run, lease, resumed=resumed, turn=turn)

    def _finished(self, run_id: str, task: asyncio.Task[Ending]) -> None:
        self._tasks.pop(run_id, None)
        if task.cancelled():
            self._end_watches(run_id, "elsewhere")
        elif (error := task.exception()) is not None:
            log.error("run %s: execution failed: %s", run_id, error, exc_info=error)
            self.counts["crashed"] += 1
            self._end_watches(run_id, "here", error)
        else:
            ending = task.result()
            self.counts[ending] += 1
            self._end_watches(run_id, "elsewhere" if ending in ("lost", "released") else "here")
        self._wake.set()  # the next run of its conversation may be claimable now
        self._check_settled()

    async def execute(
        self,
        run: RunRecord,
        lease: Lease,
        *,
        resumed: bool,
        sinks: list[Sink] | None = None,
        turn: TurnState | None = None,
    ) -> Ending:
        """Execute a claimed run in the calling task (the scheduler's tasks call this)."""
        live_sinks = self._sinks.setdefault(run.id, [])
        if sinks:
            live_sinks.extend(sinks)
        executor = RunExecutor(
            self.store,
            self.agents[run.agent],
            run,
            lease,
            lease_seconds=self.lease_seconds,
            sinks=live_sinks,
            resumed=resumed,
            breakers=self.breakers,
            on_pending=self._pending,
            committed=self.committed,
        )
        if resumed:
            log.info("resuming run %s (epoch %d)", run.id, lease.epoch)
        self.live[run.id] = executor
        self._ensure_upkeep()
        try:
            ids = {"conversation_id": run.conversation_id, "trace_id": run.trace_id}
            with bind_run_context(run.id, **ids):  # log lines name the run
                return await executor.execute(turn)
        finally:
            self.live.pop(run.id, None)
            self._dirty.pop(executor.emitter, None)
            if run.id not in self._watches:
                self._sinks.pop(run.id, None)

    # ---- upkeep of the runs executing here -------------------------------------------

    def _pending(self, emitter: RunEmitter) -> None:
        executor = self.live.get(emitter.run_id)
        if executor is not None:
            self._dirty[emitter] = executor

    def _ensure_upkeep(self) -> None:
        if self._upkeep is None or self._upkeep.done():
            self._upkeep = asyncio.create_task(self._keep_up(), name="orchestrion-upkeep")

    async def _keep_up(self) -> None:
        renew_every = self.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        next_cancel_check = time.monotonic() + CANCEL_POLL
        while self.live:
            await asyncio.sleep(UPKEEP_TICK)
            now = time.monotonic()
            try:
                due = [
                    executor
                    for emitter, executor in list(self._dirty.items())
                    if emitter.pending_since and now - emitter.pending_since >= FLUSH_AFTER
                ]
                for executor in due:
                    self._dirty.pop(executor.emitter, None)
                if due:
                    await asyncio.gather(*(self._flush(e) for e in due))
                if now >= next_renew:
                    next_renew = now + renew_every
                    await self._renew()
                elif now >= next_cancel_check:
                    next_cancel_check = now + CANCEL_POLL
                    for run_id in await self.store.cancel_requested(list(self.live)):
                        cancelled = self.live.get(run_id)
                        if cancelled is not None:
                            cancelled.request_cancel()
            except OrchestrionError as exc:  # a store hiccup: the next tick tries again
                log.warning("upkeep of running runs failed: %s", exc)

    async def _flush(self, executor: RunExecutor) -> None:
        try:
            await executor.flush()
        except LeaseLost:
            executor.lease_lost()
        except OrchestrionError as exc:
            log.warning("run %s: writing its events failed (retried): %s", executor.run.id, exc)
            self._dirty[executor.emitter] = executor

    async def _renew(self) -> None:
        executors = list(self.live.values())
        outcome = await self.store.renew_leases(
            [e.lease for e in executors], lease_seconds=self.lease_seconds, now=time.time()
        )
        for executor in executors:
            cancel = outcome.get(executor.run.id)
            if cancel is None:
                executor.lease_lost()
            elif cancel:
                executor.request_cancel()

    # ---- worker mode and shutdown ------------------------------------------------------

    async def run(
        self,
        *,
        drain: bool = False,
        stop: asyncio.Event | None = None,
        grace: float | None = None,
        hurry: asyncio.Event | None = None,
    ) -> int:
        """Work: execute queued and orphaned runs of the agents this process knows.

        Returns, with `drain`, once nothing is left that it can do; otherwise when `stop`
        is set. Then runs in flight get `grace` seconds to finish (None: as long as they
        need; `hurry` ends the wait early) and the rest are handed back to the queue.
        Returns the number of runs that ended here while it worked."""
        stop = stop or asyncio.Event()
        before = sum(self.counts.values())
        self._serving += 1
        self._generation += 1
        self._quiet.clear()
        self._next_orphan_scan = 0.0
        self._ensure_scheduler()
        self._wake.set()
        try:
            waiters = [asyncio.ensure_future(stop.wait())]
            if drain:
                waiters.append(asyncio.ensure_future(self._quiet.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        finally:
            self._serving -= 1
        if stop.is_set():
            await self.close(grace=grace, hurry=hurry)
        return sum(self.counts.values()) - before

    @property
    def active(self) -> int:
        """How many runs this process is executing now."""
        return len(self._tasks)

    async def close(self, *, grace: float | None = None, hurry: asyncio.Event | None = None) -> int:
        """Stop claiming; give the runs executing here `grace` seconds to finish (None: as
        long as they need; `hurry` ends the wait), then hand the others back to the queue
        for another worker. Returns how many were handed back."""
        if grace is None and (self._wanted or self._tasks):
            # Without a limit, the runs callers here asked for are finished first (a
            # `start()`ed run is executed even when the caller closes right away).
            settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._settled.append(settled)
            self._wake.set()
            await settled
        self._closing = True
        self._wake.set()
        for run_id in list(self._wanted):
            self._wanted.pop(run_id)
            self._end_watches(run_id, "elsewhere")
        scheduler = self._scheduler
        if scheduler is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await scheduler
        tasks = list(self._tasks.values())
        if tasks and grace != 0:
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(asyncio.wait(tasks))]
            if hurry is not None:
                waiters.append(asyncio.ensure_future(hurry.wait()))
            try:
                await asyncio.wait(waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        handed_back = 0
        for run_id, task in list(self._tasks.items()):
            running = self.live.get(run_id)
            if not task.done() and running is not None:
                running.hand_back()
                handed_back += 1
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))
        upkeep = self._upkeep
        if upkeep is not None:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await upkeep
        return handed_back


def _resumed(run: RunRecord) -> bool:
    """Whether a claim continues an earlier execution (a takeover, or a handed-back run)."""
    return run.status == "running" or run.started_at is not None
