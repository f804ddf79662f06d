"""`BreakerRegistry`: one CircuitBreaker and one RetryBudget per dependency name for the
whole process, and `pipeline(name, ...)` to compose them into a ResiliencePipeline per call
site (per run, per step: pipelines are cheap; breakers and budgets are the shared part).

Events. A shared breaker outlives any one run, so its sink is the registry's: it forwards
each breaker event to the registry's `on_event` (process-wide: logs, metrics) and to the
`on_event` of the registry pipeline whose call caused it (that run's trace), never to an
unrelated run that happened to create the breaker first.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from orchestrion.resilience.breaker import BreakerStateStore, CircuitBreaker, EventSink
from orchestrion.resilience.budget import RetryBudget
from orchestrion.resilience.classify import DEFAULT_CLASSIFIER, Classifier
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.fallback import FallbackChain
from orchestrion.resilience.hedge import HedgePolicy
from orchestrion.resilience.pipeline import Attempt, AttemptJournal, ResiliencePipeline
from orchestrion.resilience.retry import DEFAULT_RETRY, RetryPolicy
from orchestrion.resilience.shared_budget import SharedRetryBudget
from orchestrion.resilience.shared_state import StoreBreakerState
from orchestrion.store.base import Store

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")

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

    Shared breakers and budgets synchronise with the store in background tasks; call
    `close()` when the process is done with them (see there for the order).
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
        """Publish what this process recorded (breaker outcomes, budget counts) and stop
        the background synchronisation, so the fleet's view keeps this process's calls
        after it exits. Safe to call more than once (with nothing new recorded since, it
        does not touch the store); the registry stays usable afterwards.

        Close order, for whoever owns the registry (`Orchestrion.close()`):
        1. stop starting calls and let the turns in flight end (the worker);
        2. `await registry.close()`: needs the store still open;
        3. `await orchestrion.models.close_models(models)`: each model's `aclose()`
           (HTTP clients; independent of 2, but no model call may follow);
        4. `await store.close()` last.
        A store that fails here is logged (breakers also emit `breaker.store_error`),
        never raised: closing must not fail because the fleet's view could not be updated.
        """
        for breaker in list(self._breakers.values()):
            try:
                await breaker.close()
            except Exception as exc:
                log.warning("breaker %s: last publication failed: %s", breaker.name, exc)
        for name, budget in list(self._budgets.items()):
            if isinstance(budget, SharedRetryBudget):
                try:
                    await budget.close()
                except Exception as exc:
                    log.warning("retry budget %s: last publication failed: %s", name, exc)

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


__all__ = ["BreakerRegistry"]
