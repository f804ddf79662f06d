"""Decide whether a failure is worth another attempt.

Defaults: 408, 409, 425, 429, 5xx and 529 are transient; every other 4xx is the caller's
fault. Timeouts and connection errors are transient; validation errors, bugs (TypeError,
KeyError, ...) and anything unknown are not: retrying a bug only multiplies it. A
dependency overrides this by exception type, by predicate, or by result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from orchestrion.errors import DeadlineExceeded, ProviderError
from orchestrion.resilience.errors import (
    AllFallbacksFailed,
    AttemptTimeout,
    BreakerOpen,
    RetryAfterTooLong,
    RetryBudgetExhausted,
    StepTimeout,
)

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 425, 429, 529})

# SDK exception classes recognised by name so this module imports no SDK.
_TRANSIENT_CLASS_NAMES = frozenset(
    {
        "APIConnectionError",  # openai, anthropic (APITimeoutError subclasses it)
        "APITimeoutError",
        "TimeoutException",  # httpx
        "TransportError",  # httpx: connect/read/write/pool errors
        "NetworkError",
        "RemoteProtocolError",
    }
)
_VALIDATION_CLASS_NAMES = frozenset({"ValidationError", "JSONDecodeError"})

# Errors the resilience layer itself raises: retrying them would defeat their purpose.
_NEVER = (
    BreakerOpen,
    RetryBudgetExhausted,
    RetryAfterTooLong,
    AllFallbacksFailed,
    DeadlineExceeded,
    StepTimeout,
)


def status_is_retryable(status: int) -> bool | None:
    """True/False for HTTP error statuses, None for statuses that say nothing (2xx, 3xx)."""
    if status in RETRYABLE_STATUSES or 500 <= status <= 599:
        return True
    if 400 <= status <= 499:
        return False
    return None


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def default_is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _NEVER):
        return False
    if isinstance(exc, AttemptTimeout):
        return True
    status = _status_of(exc)
    if status is not None:
        verdict = status_is_retryable(status)
        if verdict is not None:
            return verdict
    if isinstance(exc, ProviderError):
        return exc.retryable
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _VALIDATION_CLASS_NAMES:
        return False
    return bool(names & _TRANSIENT_CLASS_NAMES)


Predicate = Callable[[BaseException], bool | None]


class Classifier:
    """Retryable-or-not for one dependency.

    Precedence: `predicate` (when it returns True/False; None defers) > `never_retry_on`
    > `retry_on` > the defaults above. `retry_on_result` marks a *successful* return value
    as a transient failure (e.g. an empty completion); when retries run out that last
    result is returned as is.
    """

    __slots__ = ("never_retry_on", "predicate", "retry_on", "retry_on_result")

    def __init__(
        self,
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        never_retry_on: tuple[type[BaseException], ...] = (),
        predicate: Predicate | None = None,
        retry_on_result: Callable[[Any], bool] | None = None,
    ) -> None:
        self.retry_on = retry_on
        self.never_retry_on = never_retry_on
        self.predicate = predicate
        self.retry_on_result = retry_on_result

    def is_retryable(self, exc: BaseException) -> bool:
        if self.predicate is not None:
            verdict = self.predicate(exc)
            if verdict is not None:
                return verdict
        if self.never_retry_on and isinstance(exc, self.never_retry_on):
            return False
        if self.retry_on and isinstance(exc, self.retry_on):
            return True
        return default_is_retryable(exc)


DEFAULT_CLASSIFIER = Classifier()
