"""The resilience layer's state in the store, shared by every worker of a fleet.

- `StoreBreakerState(store)`: a `BreakerStateStore` over `Store.breaker_load` /
  `Store.breaker_save_if`, so a `CircuitBreaker` given it is one breaker for every process
  on that store, and survives restarts.
- `StepAttemptJournal(store, lease, run_id, seq)`: an `AttemptJournal` over
  `Store.load_attempt` / `Store.save_attempt`, fenced by the run's lease, so a worker that
  takes over a run crashed in the middle of a backoff resumes at the right attempt number
  and waits only what was left of the wait.
- `BreakerRegistry(store, defaults, on_event)`: one `CircuitBreaker` and one `RetryBudget`
  per dependency name for the whole process, and `pipeline(name, ...)` to compose them into
  a `ResiliencePipeline` per call site (per run, per step: pipelines are cheap; breakers
  and budgets are the shared part).
- `breaker_summary(name, doc, version)`: what `orchestrion breakers` shows for one breaker.

Events. A shared breaker outlives any one run, so its sink is the registry's: it forwards
each breaker event to the registry's `on_event` (process-wide: logs, metrics) and to the
`on_event` of the registry pipeline whose call caused it (that run's trace), never to an
unrelated run that happened to create the breaker first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from orchestrion.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerStateStore,
    CircuitBreaker,
    EventSink,
)
from orchestrion.resilience.budget import RetryBudget
from orchestrion.resilience.classify import DEFAULT_CLASSIFIER, Classifier
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.fallback import FallbackChain
from orchestrion.resilience.hedge import HedgePolicy
from orchestrion.resilience.pipeline import (
    Attempt,
    AttemptJournal,
    AttemptState,
    ResiliencePipeline,
)
from orchestrion.resilience.retry import DEFAULT_RETRY, RetryPolicy
from orchestrion.store.base import Lease, Store

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")


# ---- breakers ---------------------------------------------------------------------------


class StoreBreakerState:
    """A BreakerStateStore backed by the orchestrion Store (the `breakers` table)."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        return await self.store.breaker_load(name)

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        return await self.store.breaker_save_if(name, version, state)


# ---- retry budgets shared by the fleet -------------------------------------------------

BUDGET_PREFIX = "budget:"
_BUDGET_CAS_TRIES = 8


def budget_document_name(dependency: str) -> str:
    """The shared document (in the breakers table) of a dependency's retry budget."""
    return f"{BUDGET_PREFIX}{dependency}"


def _bucket_counts(raw: Any, oldest: int, newest: int) -> dict[int, tuple[int, int]]:
    """A published {"<bucket index>": [deposits, withdrawals]} map, within [oldest,
    newest]; anything malformed is ignored."""
    out: dict[int, tuple[int, int]] = {}
    if not isinstance(raw, Mapping):
        return out
    for key, pair in raw.items():
        try:
            idx = int(key)
        except (TypeError, ValueError):
            continue
        if not oldest <= idx <= newest or not isinstance(pair, list | tuple) or len(pair) != 2:
            continue
        d, w = _num(pair[0]), _num(pair[1])
        if d is None or w is None or d < 0 or w < 0:
            continue
        out[idx] = (int(d), int(w))
    return out


def merge_budget_document(
    doc: Mapping[str, Any] | None,
    me: str,
    mine: Mapping[int, tuple[int, int]],
    *,
    now: float,
    width: float,
    buckets: int,
) -> tuple[dict[str, Any], dict[int, tuple[int, int]]]:
    """Publish worker `me`'s per-bucket counts into a shared budget document.

    Buckets are indexed by wall-clock time (floor(time / width)), so every worker's
    buckets line up. Returns the new document (one entry per worker; entries whose
    buckets all fell out of the window, and malformed ones, are pruned; `me`'s entry is
    replaced) and the other workers' counts per bucket within the window, summed.
    """
    newest = math.floor(now / width)
    oldest = newest - buckets + 1
    workers: dict[str, Any] = {}
    peers: dict[int, tuple[int, int]] = {}
    raw_workers = doc.get("workers") if isinstance(doc, Mapping) else None
    if isinstance(raw_workers, Mapping):
        for worker, entry in raw_workers.items():
            if worker == me or not isinstance(entry, Mapping):
                continue
            counts = _bucket_counts(entry.get("buckets"), oldest, newest)
            if not counts:
                continue  # stale (everything expired) or malformed: pruned
            workers[str(worker)] = {
                "at": _num(entry.get("at")),
                "buckets": {str(i): list(c) for i, c in sorted(counts.items())},
            }
            for idx, (d, w) in counts.items():
                pd, pw = peers.get(idx, (0, 0))
                peers[idx] = (pd + d, pw + w)
    own = {i: c for i, c in mine.items() if oldest <= i <= newest and (c[0] or c[1])}
    if own:
        workers[me] = {"at": now, "buckets": {str(i): list(c) for i, c in sorted(own.items())}}
    return {"kind": "retry_budget", "width": width, "workers": workers}, peers


class SharedRetryBudget(RetryBudget):
    """A RetryBudget whose limit holds for the whole fleet on one store.

    Each process counts its own calls (deposits) and retries (withdrawals) per bucket of
    wall-clock time, publishes them into the shared document `budget:<dependency>`
    (compare-and-set on `BreakerStateStore`, reloaded on conflict, one entry per worker,
    expired entries pruned) and decides with the fleet's totals:

        fleet retries <= percent * fleet calls + min_retries_per_sec * ttl

    over any window of `ttl` seconds (the floor counts once for the fleet, not per
    worker). Decisions stay synchronous and local: the other workers' counts are the ones
    last loaded. Synchronisation happens in the background, `sync_interval` seconds after
    a change at the latest, and at once after a refusal.

    Staleness: a worker's counts reach the store within `sync_interval` (plus a store
    round trip) of changing, and a worker in use reloads the others' counts at least as
    often. A decision therefore misses at most the other workers' retries of the last
    2 * sync_interval (plus round trips), and the fleet can exceed the formula by at most
    the retries it makes in such a span (in practice: a few, when the budget runs out).
    A store that cannot be reached leaves each worker on its last view, never blocks a
    call, and the budget degrades towards per-process budgets.
    """

    __slots__ = (
        "_mine",
        "_name",
        "_next_sync",
        "_peers",
        "_state",
        "_task",
        "_urgent",
        "sync_interval",
        "syncs",
        "worker_id",
    )

    def __init__(
        self,
        dependency: str,
        state: BreakerStateStore,
        *,
        worker_id: str | None = None,
        sync_interval: float = 1.0,
        percent: float = 0.2,
        min_retries_per_sec: float = 10.0,
        ttl: float = 10.0,
        buckets: int = 10,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            percent=percent,
            min_retries_per_sec=min_retries_per_sec,
            ttl=ttl,
            buckets=buckets,
            clock=clock,
        )
        if sync_interval <= 0:
            raise ValueError("sync_interval must be positive")
        self._name = budget_document_name(dependency)
        self._state = state
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.sync_interval = sync_interval
        self._mine: dict[int, list[int]] = {}  # wall-clock bucket -> [deposits, withdrawals]
        self._peers: dict[int, tuple[int, int]] = {}
        self._next_sync = 0.0
        self._task: asyncio.Task[None] | None = None
        self._urgent: asyncio.Event | None = None
        self.syncs = 0  # completed synchronisations (for tests and metrics)

    # -- counting (synchronous, local) --

    def _window(self) -> tuple[int, int]:
        newest = math.floor(self._clock.now() / self._width)
        return newest - self._buckets + 1, newest

    def _count(self, slot: int) -> None:
        oldest, newest = self._window()
        for idx in [i for i in self._mine if i < oldest]:
            del self._mine[idx]
        self._mine.setdefault(newest, [0, 0])[slot] += 1
        self._schedule(urgent=False)

    def _totals(self) -> tuple[int, int]:
        oldest, newest = self._window()
        d = w = 0
        for table in (self._mine, self._peers):
            for idx, counts in table.items():
                if oldest <= idx <= newest:
                    d += counts[0]
                    w += counts[1]
        return d, w

    def deposit(self) -> None:
        self._count(0)

    def balance(self) -> float:
        d, w = self._totals()
        return self.percent * d + self.reserve - w

    def try_withdraw(self) -> bool:
        if self.balance() < 1.0:
            self._schedule(urgent=True)  # maybe stale: look at the fleet again now
            return False
        self._count(1)
        return True

    # -- synchronisation (asynchronous, in the background) --

    def _schedule(self, *, urgent: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop: stay local until the next call from one
        if self._task is None or self._task.done():
            self._urgent = asyncio.Event()
            self._task = loop.create_task(self._sync_later(), name=f"sync {self._name}")
        if urgent and self._urgent is not None:
            self._urgent.set()

    async def _sync_later(self) -> None:
        delay = self._next_sync - self._clock.monotonic()
        if delay > 0 and self._urgent is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), delay)
        try:
            await self.sync()
        except Exception:  # a store hiccup: keep the last view, try again on next use
            log.warning("retry budget %s: could not sync with the store", self._name, exc_info=True)
            self._next_sync = self._clock.monotonic() + self.sync_interval

    async def sync(self) -> None:
        """Publish this worker's counts and load the other workers' (one load and one
        compare-and-set, repeated on conflict)."""
        doc: dict[str, Any] | None = None
        for _ in range(_BUDGET_CAS_TRIES):
            doc, version = await self._state.load(self._name)
            mine = {i: (c[0], c[1]) for i, c in self._mine.items()}
            new, peers = merge_budget_document(
                doc,
                self.worker_id,
                mine,
                now=self._clock.now(),
                width=self._width,
                buckets=self._buckets,
            )
            if not new["workers"] and doc is None:
                self._peers = peers
                break  # nothing to publish and nothing published: no document needed
            if await self._state.save_if(self._name, version, new):
                self._peers = peers
                break
        else:
            # Lost every race: still decide with the freshest view of the others.
            if doc is not None:
                _, self._peers = merge_budget_document(
                    doc,
                    self.worker_id,
                    {},
                    now=self._clock.now(),
                    width=self._width,
                    buckets=self._buckets,
                )
        self.syncs += 1
        self._next_sync = self._clock.monotonic() + self.sync_interval

    async def close(self) -> None:
        """Publish what is left and stop the background synchronisation."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sync()


# ---- attempts ---------------------------------------------------------------------------


class StepAttemptJournal:
    """The retry loop's AttemptJournal for one step, stored at (run_id, seq) and fenced by
    the run's lease: a worker whose lease was taken over gets LeaseLost when it saves.

    One journal belongs to one pipeline call. `pipeline` tags the saved state: a journal
    tagged differently (another dependency's call in the same step, e.g. a fallback model)
    ignores the state instead of resuming someone else's attempt count. Give a step's
    journal to its primary call; a step that makes several resilient calls in sequence
    should tag each with its pipeline name.
    """

    __slots__ = ("lease", "pipeline", "run_id", "seq", "store")

    def __init__(
        self,
        store: Store,
        lease: Lease,
        run_id: str,
        seq: int,
        *,
        pipeline: str | None = None,
    ) -> None:
        if run_id != lease.run_id:
            raise ValueError(
                f"StepAttemptJournal: run_id {run_id!r} is not the lease's run {lease.run_id!r}"
            )
        self.store = store
        self.lease = lease
        self.run_id = run_id
        self.seq = seq
        self.pipeline = pipeline

    async def load(self) -> AttemptState | None:
        doc = await self.store.load_attempt(self.run_id, self.seq)
        if doc is None or doc.get("pipeline") != self.pipeline:
            return None
        try:
            return AttemptState.from_json(doc)
        except (KeyError, TypeError, ValueError):
            log.warning(
                "run %s step %d: unreadable attempt state %r ignored; retrying from attempt 1",
                self.run_id,
                self.seq,
                doc,
            )
            return None

    async def save(self, state: AttemptState) -> None:
        doc = state.to_json()
        doc["pipeline"] = self.pipeline
        await self.store.save_attempt(self.lease, self.seq, doc)


# ---- the registry -----------------------------------------------------------------------

# The on_event of the registry pipeline whose call is running in this task (if any).
_CALLER_SINK: contextvars.ContextVar[EventSink | None] = contextvars.ContextVar(
    "orchestrion_resilience_caller_sink", default=None
)

_RESERVED_BREAKER_KEYS = frozenset({"name", "store", "clock", "on_event", "worker_id"})
_RESERVED_BUDGET_KEYS = frozenset({"clock", "dependency", "state", "worker_id"})


def _check_kwargs(
    what: str, target: Callable[..., Any], kwargs: Mapping[str, Any], reserved: frozenset[str]
) -> None:
    allowed = {
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    } - reserved
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"{what}: unknown setting(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(sorted(allowed))}"
        )


class _RegistryPipeline(ResiliencePipeline):
    """A pipeline whose shared breaker reports to this pipeline's sink during its calls."""

    async def call(
        self,
        fn: Callable[[Attempt], Awaitable[T]],
        *,
        journal: AttemptJournal | None = None,
        fallback: FallbackChain[T] | None = None,
    ) -> T:
        token = _CALLER_SINK.set(self.on_event)
        try:
            return await super().call(fn, journal=journal, fallback=fallback)
        finally:
            _CALLER_SINK.reset(token)


class BreakerRegistry:
    """One CircuitBreaker and one RetryBudget per dependency name, for the whole process.

    `store`: an orchestrion Store (breakers shared by every process on it, through
    `StoreBreakerState`), any other BreakerStateStore, or None (breakers local to this
    process). `defaults`: CircuitBreaker settings for every dependency (`window_size`,
    `minimum_calls`, `wait_in_open`, ...); `overrides`: per dependency name, on top of the
    defaults. `budget_defaults` / `budget_overrides`: the same for RetryBudget (`percent`,
    `min_retries_per_sec`, `ttl`, and with shared budgets `sync_interval`). Unknown
    settings raise TypeError at once.

    Breakers are fleet-wide. Budgets are per process unless `share_budgets` is true and
    there is a store: then each is a `SharedRetryBudget` (the fleet's retries limited to
    percent x the fleet's calls + the floor, synchronised through the same store).
    """

    def __init__(
        self,
        store: Store | BreakerStateStore | None,
        defaults: Mapping[str, Any] | None = None,
        on_event: EventSink | None = None,
        *,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        budget_defaults: Mapping[str, Any] | None = None,
        budget_overrides: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        worker_id: str | None = None,
        share_budgets: bool = False,
    ) -> None:
        self.state: BreakerStateStore | None = (
            StoreBreakerState(store) if isinstance(store, Store) else store
        )
        self.share_budgets = share_budgets and self.state is not None
        self.defaults = dict(defaults or {})
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.budget_defaults = dict(budget_defaults or {})
        self.budget_overrides = {k: dict(v) for k, v in (budget_overrides or {}).items()}
        self.on_event = on_event
        self.clock = clock
        self.worker_id = worker_id
        _check_kwargs("breaker defaults", CircuitBreaker, self.defaults, _RESERVED_BREAKER_KEYS)
        for name, kw in self.overrides.items():
            _check_kwargs(f"breaker {name!r}", CircuitBreaker, kw, _RESERVED_BREAKER_KEYS)
        budget_type = SharedRetryBudget if self.share_budgets else RetryBudget
        _check_kwargs("budget defaults", budget_type, self.budget_defaults, _RESERVED_BUDGET_KEYS)
        for name, kw in self.budget_overrides.items():
            _check_kwargs(f"budget {name!r}", budget_type, kw, _RESERVED_BUDGET_KEYS)
        self._budget_worker_id = worker_id or uuid.uuid4().hex[:12]
        self._breakers: dict[str, CircuitBreaker] = {}
        self._budgets: dict[str, RetryBudget] = {}

    def get(self, name: str) -> CircuitBreaker:
        """The breaker of dependency `name` (created on first use, then always the same)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            settings = {**self.defaults, **self.overrides.get(name, {})}
            breaker = CircuitBreaker(
                name,
                store=self.state,
                clock=self.clock,
                on_event=self._dispatch,
                worker_id=self.worker_id,
                **settings,
            )
            self._breakers[name] = breaker
        return breaker

    breaker = get

    def budget(self, name: str) -> RetryBudget:
        """The retry budget of dependency `name` (one per process; fleet-wide with
        `share_budgets`)."""
        budget = self._budgets.get(name)
        if budget is None:
            settings = {**self.budget_defaults, **self.budget_overrides.get(name, {})}
            if self.share_budgets and self.state is not None:
                budget = SharedRetryBudget(
                    name,
                    self.state,
                    worker_id=self._budget_worker_id,
                    clock=self.clock,
                    **settings,
                )
            else:
                budget = RetryBudget(clock=self.clock, **settings)
            self._budgets[name] = budget
        return budget

    async def close(self) -> None:
        """Publish the shared budgets' last counts and stop their synchronisation."""
        for budget in self._budgets.values():
            if isinstance(budget, SharedRetryBudget):
                try:
                    await budget.close()
                except Exception:
                    log.warning("retry budget of %s: last sync failed", budget.worker_id)

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers created so far, by name."""
        return dict(self._breakers)

    def pipeline(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        timeout: float | None = None,
        hedge: HedgePolicy | None = None,
        classifier: Classifier = DEFAULT_CLASSIFIER,
        on_event: EventSink | None = None,
        rng: Callable[[], float] = random.random,
        breaker: bool = True,
        budget: bool = True,
    ) -> ResiliencePipeline:
        """A pipeline for one call site of dependency `name`, on the shared breaker and
        budget of that name. `on_event` receives this pipeline's retry events and the
        breaker events its own calls cause. Cheap: make one per run or per step."""
        return _RegistryPipeline(
            name,
            retry=retry,
            budget=self.budget(name) if budget else None,
            breaker=self.get(name) if breaker else None,
            timeout=timeout,
            hedge=hedge,
            classifier=classifier,
            clock=self.clock,
            on_event=on_event,
            rng=rng,
        )

    def _dispatch(self, type_: str, attrs: dict[str, Any]) -> None:
        for sink in (self.on_event, _CALLER_SINK.get()):
            if sink is None:
                continue
            try:
                sink(type_, attrs)
            except Exception:  # one broken sink must not starve the other
                log.exception("on_event sink failed for %s", type_)


# ---- reading the shared state -----------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def breaker_summary(
    name: str, doc: Mapping[str, Any], version: int, *, now: float | None = None
) -> dict[str, Any]:
    """A JSON-ready view of one breaker's stored state.

    `failure_rate` / `slow_call_rate` / `calls`: for a closed breaker, the fleet's
    combined window as last published by each worker (`workers` of them); for an open or
    half-open one, the window that opened it. `probe_at` (wall clock) and `probe_in`
    (seconds, never negative): when an open breaker lets its next probe through; None
    when closed or half-open. A half-open breaker reports its probes in flight and the
    probe successes so far.
    """
    now = time.time() if now is None else now
    state = doc.get("state")
    state = state if state in (CLOSED, OPEN, HALF_OPEN) else "unknown"
    epoch = doc.get("epoch")
    failure_rate = slow_call_rate = None
    calls: int | None = None
    workers = 0
    if state == CLOSED:
        c = f = s = 0
        windows = doc.get("windows")
        for w in (windows or {}).values() if isinstance(windows, Mapping) else ():
            if not isinstance(w, Mapping) or w.get("epoch") != epoch:
                continue
            workers += 1
            c += int(_num(w.get("calls")) or 0)
            f += int(_num(w.get("failures")) or 0)
            s += int(_num(w.get("slow")) or 0)
        calls = c
        failure_rate = f / c if c else 0.0
        slow_call_rate = s / c if c else 0.0
    else:
        rate = doc.get("rate")
        if isinstance(rate, Mapping):
            failure_rate = _num(rate.get("failure_rate"))
            slow_call_rate = _num(rate.get("slow_call_rate"))
            n = _num(rate.get("calls"))
            calls = None if n is None else int(n)
    probe_at = _num(doc.get("probe_at")) if state == OPEN else None
    in_flight = successes = None
    if state == HALF_OPEN:
        probes = doc.get("probes")
        probes = probes if isinstance(probes, Mapping) else {}
        claims = probes.get("claims")
        claims = claims if isinstance(claims, Mapping) else {}
        in_flight = sum(1 for e in claims.values() if (_num(e) or 0.0) > now)
        successes = int(_num(probes.get("successes")) or 0)
    return {
        "name": name,
        "state": state,
        "epoch": epoch,
        "version": version,
        "failure_rate": failure_rate,
        "slow_call_rate": slow_call_rate,
        "calls": calls,
        "workers": workers,
        "probe_at": probe_at,
        "probe_in": None if probe_at is None else max(0.0, probe_at - now),
        "probes_in_flight": in_flight,
        "probe_successes": successes,
        "changed_at": _num(doc.get("changed_at")),
    }


__all__ = [
    "BUDGET_PREFIX",
    "BreakerRegistry",
    "SharedRetryBudget",
    "StepAttemptJournal",
    "StoreBreakerState",
    "breaker_summary",
    "budget_document_name",
    "merge_budget_document",
]
