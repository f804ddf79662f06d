"""Context that stays bounded: what of a conversation each model request carries.

A policy per agent (`Agent(context=...)`): `keep_all()`, `window(...)`, `summarize(...)`
or your own function (`custom(...)`); the default is `window(max_tokens=16_000)`. Token
counts are estimated offline and calibrated by what the provider reports. See
docs/context.md.
"""

from orchestrion.context.policy import (
    DEFAULT_CONTEXT,
    ContextFunction,
    ContextPolicy,
    custom,
    keep_all,
    summarize,
    window,
)
from orchestrion.context.tokens import Estimator, TokenCounter, estimate_message
from orchestrion.context.units import is_pair_safe, pair_safe

__all__ = [
    "DEFAULT_CONTEXT",
    "ContextFunction",
    "ContextPolicy",
    "Estimator",
    "TokenCounter",
    "custom",
    "estimate_message",
    "is_pair_safe",
    "keep_all",
    "pair_safe",
    "summarize",
    "window",
]
