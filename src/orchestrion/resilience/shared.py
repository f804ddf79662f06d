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

import contextvars
import inspect
import logging
import math
import random
import time
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
_RESERVED_BUDGET_KEYS = frozenset({"clock"})


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
    `min_retries_per_sec`, `ttl`). Unknown settings raise TypeError at once.

    Budgets stay per process (as documented for RetryBudget); breakers are fleet-wide.
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
    ) -> None:
        self.state: BreakerStateStore | None = (
            StoreBreakerState(store) if isinstance(store, Store) else store
        )
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
        _check_kwargs("budget defaults", RetryBudget, self.budget_defaults, _RESERVED_BUDGET_KEYS)
        for name, kw in self.budget_overrides.items():
            _check_kwargs(f"budget {name!r}", RetryBudget, kw, _RESERVED_BUDGET_KEYS)
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
        """The retry budget of dependency `name` (one per process)."""
        budget = self._budgets.get(name)
        if budget is None:
            settings = {**self.budget_defaults, **self.budget_overrides.get(name, {})}
            budget = RetryBudget(clock=self.clock, **settings)
            self._budgets[name] = budget
        return budget

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
    "BreakerRegistry",
    "StepAttemptJournal",
    "StoreBreakerState",
    "breaker_summary",
]
