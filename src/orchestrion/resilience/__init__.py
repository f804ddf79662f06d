"""The resilience layer: retry, retry budget, circuit breaker, deadlines, fallback and
hedging, composed per dependency by ResiliencePipeline. See docs/resilience.md."""

from orchestrion.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerStateStore,
    CircuitBreaker,
    InMemoryBreakerStore,
    Permit,
)
from orchestrion.resilience.budget import RetryBudget
from orchestrion.resilience.classify import (
    DEFAULT_CLASSIFIER,
    RETRYABLE_STATUSES,
    Classifier,
    default_is_retryable,
    status_is_retryable,
)
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from orchestrion.resilience.deadline import (
    check_deadline,
    current_deadline,
    deadline,
    remaining,
    timeout,
)
from orchestrion.resilience.errors import (
    AllFallbacksFailed,
    AttemptTimeout,
    BreakerOpen,
    ResilienceError,
    RetryAfterTooLong,
    RetryBudgetExhausted,
    StepTimeout,
)
from orchestrion.resilience.fallback import (
    Fallback,
    FallbackChain,
    NoCachedAnswer,
    alternative,
    cached,
    degrade,
)
from orchestrion.resilience.hedge import HedgePolicy, hedged
from orchestrion.resilience.pipeline import (
    Attempt,
    AttemptJournal,
    AttemptState,
    InMemoryAttemptJournal,
    ResiliencePipeline,
)
from orchestrion.resilience.retry import DEFAULT_RETRY, RetryPolicy
from orchestrion.resilience.retry_after import (
    MAX_RETRY_AFTER,
    parse_retry_after,
    parse_retry_after_ms,
    retry_after_from_error,
    retry_after_from_headers,
)

__all__ = [
    "CLOSED",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_RETRY",
    "HALF_OPEN",
    "MAX_RETRY_AFTER",
    "OPEN",
    "RETRYABLE_STATUSES",
    "SYSTEM_CLOCK",
    "AllFallbacksFailed",
    "Attempt",
    "AttemptJournal",
    "AttemptState",
    "AttemptTimeout",
    "BreakerOpen",
    "BreakerStateStore",
    "CircuitBreaker",
    "Classifier",
    "Clock",
    "FakeClock",
    "Fallback",
    "FallbackChain",
    "HedgePolicy",
    "InMemoryAttemptJournal",
    "InMemoryBreakerStore",
    "NoCachedAnswer",
    "Permit",
    "ResilienceError",
    "ResiliencePipeline",
    "RetryAfterTooLong",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "StepTimeout",
    "SystemClock",
    "alternative",
    "cached",
    "check_deadline",
    "current_deadline",
    "deadline",
    "default_is_retryable",
    "degrade",
    "hedged",
    "parse_retry_after",
    "parse_retry_after_ms",
    "remaining",
    "retry_after_from_error",
    "retry_after_from_headers",
    "status_is_retryable",
    "timeout",
]
