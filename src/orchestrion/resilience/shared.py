"""Kept for import stability: the engine imports these names from here. The resilience
layer's shared state now lives in modules by concern: `registry` (BreakerRegistry),
`attempts` (StepAttemptJournal), `shared_state` (StoreBreakerState), `shared_budget`
(SharedRetryBudget) and `summary` (what `orchestrion breakers` shows)."""

from orchestrion.resilience.attempts import StepAttemptJournal
from orchestrion.resilience.registry import BreakerRegistry

__all__ = ["BreakerRegistry", "StepAttemptJournal"]
