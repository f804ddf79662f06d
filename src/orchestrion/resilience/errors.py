"""Errors raised by the resilience layer. Each says which dependency and why, in plain words."""

from __future__ import annotations

import time

from orchestrion.errors import OrchestrionError


def _fmt_at(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class ResilienceError(OrchestrionError):
    """Base class of the errors the resilience layer raises on its own account."""


class BreakerOpen(ResilienceError):
    """A circuit breaker refused the call without trying it (fail fast).

    `probe_at` is the wall-clock time (time.time()) at which the breaker lets a probe
    through, or None when it is half-open and every probe slot is taken.
    """

    def __init__(
        self,
        breaker: str,
        probe_at: float | None,
        *,
        state: str = "open",
        now: float | None = None,
        failure_rate: float | None = None,
    ) -> None:
        self.breaker = breaker
        self.probe_at = probe_at
        self.state = state
        self.failure_rate = failure_rate
        if probe_at is None:
            when = "all half-open probe slots are taken"
        else:
            wait = max(0.0, probe_at - (time.time() if now is None else now))
            when = f"next probe at {_fmt_at(probe_at)} (in {wait:.1f}s)"
        rate = "" if failure_rate is None else f", failure rate {failure_rate:.0%}"
        super().__init__(f"circuit breaker {breaker!r} is {state}{rate}: {when}")


class RetryBudgetExhausted(ResilienceError):
    """A retry was refused because the dependency's retry budget is spent."""

    def __init__(self, pipeline: str, last_error: BaseException, attempt: int) -> None:
        self.pipeline = pipeline
        self.last_error = last_error
        self.attempt = attempt
        super().__init__(
            f"{pipeline!r}: retry budget exhausted after attempt {attempt} "
            f"(last error: {type(last_error).__name__}: {last_error})"
        )


class RetryAfterTooLong(ResilienceError):
    """The dependency asked us to wait longer than the policy allows; failing fast instead."""

    def __init__(
        self, pipeline: str, retry_after: float, limit: float, last_error: BaseException
    ) -> None:
        self.pipeline = pipeline
        self.retry_after = retry_after
        self.limit = limit
        self.last_error = last_error
        super().__init__(
            f"{pipeline!r} asked to retry after {retry_after:.1f}s, more than the "
            f"{limit:.1f}s this policy waits; giving up instead of sleeping"
        )


class AttemptTimeout(ResilienceError, TimeoutError):
    """One attempt ran past its per-attempt timeout (retryable: the next attempt may be fast)."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(f"{name!r}: attempt timed out after {seconds:g}s")


class StepTimeout(ResilienceError, TimeoutError):
    """A step (all its attempts and waits) ran past its timeout."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(f"{name!r}: step timed out after {seconds:g}s")


class AllFallbacksFailed(ResilienceError):
    """Every handler in a fallback chain failed; `errors` holds each one, primary first."""

    def __init__(self, chain: str, errors: list[BaseException]) -> None:
        self.chain = chain
        self.errors = errors
        last = errors[-1] if errors else None
        super().__init__(
            f"fallback chain {chain!r}: all {len(errors)} options failed"
            + (f" (last: {type(last).__name__}: {last})" if last is not None else "")
        )
