"""One dependency's resilience, composed: deadline check -> breaker -> attempt timeout
(-> hedging) -> the call; on failure: classify -> Retry-After / backoff -> elapsed,
deadline and budget checks -> journal -> wait -> next attempt. An optional fallback chain
wraps the whole thing.

The hot path (breaker closed, no timeout, no deadline, no journal, success) awaits only
the call itself: no task, no timer, no closure; one small Attempt object per call.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from orchestrion.resilience.breaker import CircuitBreaker, Permit
from orchestrion.resilience.budget import RetryBudget
from orchestrion.resilience.classify import DEFAULT_CLASSIFIER, Classifier
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.deadline import _CURRENT, Bound, Scope
from orchestrion.resilience.errors import (
    AttemptTimeout,
    BreakerOpen,
    RetryAfterTooLong,
    RetryBudgetExhausted,
)
from orchestrion.resilience.fallback import FallbackChain
from orchestrion.resilience.hedge import HedgePolicy, hedged
from orchestrion.resilience.retry import DEFAULT_RETRY, RetryPolicy
from orchestrion.resilience.retry_after import retry_after_from_error

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]


class Attempt:
    """What the called function learns about this attempt."""

    __slots__ = ("deadline", "hedge", "number", "pipeline")

    def __init__(self, number: int, pipeline: str, hedge: int, deadline: float | None) -> None:
        self.number = number  # 1-based, stable across crash recovery
        self.pipeline = pipeline
        self.hedge = hedge  # 0 for the primary, 1.. for hedged copies
        self.deadline = deadline  # absolute time.time() this attempt must not outlive, or None

    def __repr__(self) -> str:
        return f"Attempt(number={self.number}, pipeline={self.pipeline!r}, hedge={self.hedge})"


@dataclass(frozen=True, slots=True)
class AttemptState:
    """What survives a crash: the last attempt made, when the next one is due (wall clock),
    and when the first one started (for max_elapsed)."""

    attempt: int
    next_attempt_at: float | None
    first_attempt_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptState:
        nxt = data.get("next_attempt_at")
        return cls(
            attempt=int(data["attempt"]),
            next_attempt_at=None if nxt is None else float(nxt),
            first_attempt_at=float(data["first_attempt_at"]),
        )


class AttemptJournal(Protocol):
    """Per-call persistence of the retry loop (the engine backs it with the step journal)."""

    async def load(self) -> AttemptState | None: ...

    async def save(self, state: AttemptState) -> None: ...


class InMemoryAttemptJournal:
    def __init__(self, state: AttemptState | None = None) -> None:
        self.state = state
        self.saves: list[AttemptState] = []

    async def load(self) -> AttemptState | None:
        return self.state

    async def save(self, state: AttemptState) -> None:
        self.state = state
        self.saves.append(state)


class _GiveUp(Exception):
    def __init__(self, reason: str, replacement: BaseException | None) -> None:
        self.reason = reason
        self.replacement = replacement  # None: surface the original error / last result


_NO_RESULT: Any = object()


class ResiliencePipeline:
    def __init__(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: float | None = None,
        hedge: HedgePolicy | None = None,
        classifier: Classifier = DEFAULT_CLASSIFIER,
        clock: Clock = SYSTEM_CLOCK,
        on_event: EventSink | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 seconds or None")
        self.name = name
        self.retry = retry if retry is not None else RetryPolicy.no_retry()
        self.budget = budget
        self.breaker = breaker
        self.timeout = timeout
        self.hedge = hedge
        self.classifier = classifier
        self.clock = clock
        self.on_event = on_event
        self.rng = rng
        if breaker is not None and breaker.on_event is None:
            breaker.on_event = on_event  # one sink sees the breaker's transitions too

    @classmethod
    def standard(
        cls,
        name: str,
        *,
        timeout: float | None = None,
        breaker_store: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        on_event: EventSink | None = None,
    ) -> ResiliencePipeline:
        """Every default on: RetryPolicy(), RetryBudget(), CircuitBreaker(name)."""
        return cls(
            name,
            retry=RetryPolicy(),
            budget=RetryBudget(clock=clock),
            breaker=CircuitBreaker(name, store=breaker_store, clock=clock),
            timeout=timeout,
            clock=clock,
            on_event=on_event,
        )

    # ---- the call ----------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[[Attempt], Awaitable[T]],
        *,
        journal: AttemptJournal | None = None,
        fallback: FallbackChain[T] | None = None,
    ) -> T:
        if fallback is not None:
            return await fallback.call(partial(self._run, fn, journal))
        return await self._run(fn, journal)

    async def _run(
        self, fn: Callable[[Attempt], Awaitable[T]], journal: AttemptJournal | None
    ) -> T:
        clock = self.clock
        emit = self.on_event
        br = self.breaker
        attempt = 0
        first_at = clock.now()
        if journal is not None:
            saved = await journal.load()
            if saved is not None:
                attempt, first_at = saved.attempt, saved.first_attempt_at
                if saved.next_attempt_at is not None:
                    await self._resume_wait(saved)
        if attempt == 0 and self.budget is not None:
            self.budget.deposit()
        guarded = self.timeout is not None or self.hedge is not None
        while True:
            attempt += 1
            bound = _CURRENT.get()
            if bound is not None and clock.now() >= bound.at:
                self._give_up(attempt - 1, first_at, "deadline", None)
                raise bound.error()
            permit: Permit | None = None
            if br is not None:
                if br._fast_admit():
                    permit = br._permit
                else:
                    try:
                        permit = await br.acquire()
                    except BreakerOpen as exc:
                        self._give_up(attempt - 1, first_at, "breaker_open", exc)
                        raise
            t0 = clock.monotonic()
            try:
                if guarded or bound is not None:
                    result = await self._guarded(fn, attempt)
                else:
                    result = await fn(Attempt(attempt, self.name, 0, None))
            except Exception as exc:
                duration = clock.monotonic() - t0
                retryable = self.classifier.is_retryable(exc)
                if br is not None and permit is not None:
                    await br.record(permit, "failure" if retryable else "ignored", duration)
                if emit is not None:
                    self._emit(
                        "retry.attempt",
                        {
                            "pipeline": self.name,
                            "attempt": attempt,
                            "outcome": "error",
                            "duration": duration,
                            "error_type": type(exc).__name__,
                            "error": str(exc),
                            "retryable": retryable,
                        },
                    )
                try:
                    delay = await self._plan(attempt, first_at, exc, retryable, journal)
                except _GiveUp as g:
                    self._give_up(attempt, first_at, g.reason, exc)
                    if g.replacement is not None:
                        raise g.replacement from exc
                    raise exc from None
                await clock.sleep(delay)
                continue
            except BaseException:
                duration = clock.monotonic() - t0
                self._emit(
                    "retry.attempt",
                    {
                        "pipeline": self.name,
                        "attempt": attempt,
                        "outcome": "cancelled",
                        "duration": duration,
                    },
                )
                if br is not None and permit is not None:
                    # Cancelled: says nothing about the dependency's health.
                    await br.record(permit, "ignored", duration)
                raise
            duration = clock.monotonic() - t0
            rr = self.classifier.retry_on_result
            if rr is not None and rr(result):
                if br is not None and permit is not None:
                    await br.record(permit, "failure", duration)
                self._emit(
                    "retry.attempt",
                    {
                        "pipeline": self.name,
                        "attempt": attempt,
                        "outcome": "retryable_result",
                        "duration": duration,
                    },
                )
                try:
                    delay = await self._plan(attempt, first_at, None, True, journal)
                except _GiveUp as g:
                    self._give_up(attempt, first_at, g.reason, None)
                    if g.replacement is not None:
                        raise g.replacement from None
                    return result
                await clock.sleep(delay)
                continue
            if br is not None and permit is not None:
                if permit.probe is None:
                    if br._record_success_fast(permit, duration):
                        await br.settle()
                else:
                    await br.record(permit, "success", duration)
            if emit is not None:
                self._emit(
                    "retry.attempt",
                    {
                        "pipeline": self.name,
                        "attempt": attempt,
                        "outcome": "success",
                        "duration": duration,
                    },
                )
            return result

    async def _guarded(self, fn: Callable[[Attempt], Awaitable[T]], attempt: int) -> T:
        """The attempt under its timeout (and the enclosing deadline), maybe hedged."""
        own = None
        if self.timeout is not None:
            own = Bound(self.clock.now() + self.timeout, self.name, self.timeout, AttemptTimeout)
        async with Scope(own, self.clock) as scope:
            bound = scope.bound
            deadline = None if bound is None else bound.at
            if self.hedge is None:
                return await fn(Attempt(attempt, self.name, 0, deadline))
            budget = self.budget
            return await hedged(
                lambda k: fn(Attempt(attempt, self.name, k, deadline)),
                self.hedge,
                clock=self.clock,
                name=self.name,
                attempt=attempt,
                on_event=self.on_event,
                may_fire=None if budget is None else budget.try_withdraw,
            )

    async def _plan(
        self,
        attempt: int,
        first_at: float,
        exc: BaseException | None,
        retryable: bool,
        journal: AttemptJournal | None,
    ) -> float:
        """The wait before the next attempt, or _GiveUp. Journals the plan before returning."""
        policy = self.retry
        if not retryable:
            raise _GiveUp("not_retryable", None)
        if attempt >= policy.max_attempts:
            raise _GiveUp("max_attempts", None)
        now = self.clock.now()
        backoff = policy.backoff(attempt, self.rng)
        retry_after = None
        if exc is not None and policy.respect_retry_after:
            retry_after = retry_after_from_error(exc, now=now)
        delay, reason = backoff, "backoff"
        if retry_after is not None:
            if retry_after > policy.max_retry_after:
                assert exc is not None
                raise _GiveUp(
                    "retry_after_too_long",
                    RetryAfterTooLong(self.name, retry_after, policy.max_retry_after, exc),
                )
            if retry_after >= backoff:
                delay, reason = retry_after, "retry_after"
        if policy.max_elapsed is not None and now + delay - first_at > policy.max_elapsed:
            raise _GiveUp("max_elapsed", None)
        bound = _CURRENT.get()
        if bound is not None and now + delay >= bound.at:
            raise _GiveUp("deadline", bound.error())
        if self.budget is not None and not self.budget.try_withdraw():
            self._emit(
                "budget.refused",
                {"pipeline": self.name, "attempt": attempt, "balance": self.budget.balance()},
            )
            raise _GiveUp(
                "budget",
                None if exc is None else RetryBudgetExhausted(self.name, exc, attempt),
            )
        next_at = now + delay
        if journal is not None:
            await journal.save(AttemptState(attempt, next_at, first_at))
        self._emit(
            "retry.wait",
            {
                "pipeline": self.name,
                "attempt": attempt,
                "next_attempt": attempt + 1,
                "delay": delay,
                "reason": reason,
                "backoff": backoff,
                "retry_after": retry_after,
                "next_attempt_at": next_at,
            },
        )
        return delay

    async def _resume_wait(self, saved: AttemptState) -> None:
        """After a crash mid-backoff: sleep only what is left of the journaled wait."""
        assert saved.next_attempt_at is not None
        now = self.clock.now()
        left = saved.next_attempt_at - now
        if left <= 0:
            return
        bound = _CURRENT.get()
        if bound is not None and now + left >= bound.at:
            self._give_up(saved.attempt, saved.first_attempt_at, "deadline", None)
            raise bound.error()
        self._emit(
            "retry.wait",
            {
                "pipeline": self.name,
                "attempt": saved.attempt,
                "next_attempt": saved.attempt + 1,
                "delay": left,
                "reason": "resume",
                "backoff": None,
                "retry_after": None,
                "next_attempt_at": saved.next_attempt_at,
            },
        )
        await self.clock.sleep(left)

    def _give_up(
        self, attempt: int, first_at: float, reason: str, exc: BaseException | None
    ) -> None:
        self._emit(
            "retry.giveup",
            {
                "pipeline": self.name,
                "attempt": attempt,
                "reason": reason,
                "elapsed": self.clock.now() - first_at,
                "error_type": None if exc is None else type(exc).__name__,
                "error": None if exc is None else str(exc),
            },
        )

    def _emit(self, type_: str, attrs: dict[str, Any]) -> None:
        sink = self.on_event
        if sink is None:
            return
        try:
            sink(type_, attrs)
        except Exception:  # a broken sink must not break the call it observes
            log.exception("on_event sink failed for %s", type_)


__all__ = [
    "Attempt",
    "AttemptJournal",
    "AttemptState",
    "InMemoryAttemptJournal",
    "ResiliencePipeline",
]
