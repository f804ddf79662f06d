"""`BreakerSettings`: the circuit-breaker settings of a process, typed and checked when
they are given (`Orchestrion(breaker_settings=...)`), not when the first call trips over
them.

    Orchestrion(store, breaker_settings=BreakerSettings(minimum_calls=10, wait_in_open=15))

A mapping with the same keys is accepted too; `BreakerSettings.of(value)` turns either
into settings, or raises ValueError with one line that names the wrong key or value.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class BreakerSettings(BaseModel):
    """CircuitBreaker settings for every dependency (see docs/resilience.md). Only the
    settings given are passed on; the others keep the CircuitBreaker defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    window: Literal["count", "time"] = "count"
    window_size: int = Field(default=100, ge=1, description="Calls in a count window.")
    window_seconds: float = Field(default=60.0, gt=0, description="Length of a time window.")
    minimum_calls: int = Field(default=20, ge=1, description="No decision on fewer calls.")
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    slow_call_duration: float | None = Field(
        default=60.0, gt=0, description="Seconds that make a call slow (None: none is)."
    )
    slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1)
    wait_in_open: float = Field(default=30.0, ge=0, description="Seconds open before probing.")
    half_open_probes: int = Field(default=3, ge=1)
    probe_timeout: float = Field(default=120.0, gt=0)
    sync_every: int = Field(default=50, ge=1)
    sync_interval: float = Field(default=1.0, gt=0)
    peer_ttl: float | None = Field(default=None, gt=0)

    def breaker_kwargs(self) -> dict[str, Any]:
        """The settings that were given, as CircuitBreaker keyword arguments."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def of(cls, value: BreakerSettings | Mapping[str, Any] | None) -> BreakerSettings:
        """Settings from settings, a mapping of the same keys, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, BreakerSettings):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                "breaker_settings must be a BreakerSettings or a mapping of its fields, "
                f"not {type(value).__name__}"
            )
        unknown = sorted(str(k) for k in value if k not in cls.model_fields)
        if unknown:
            close = difflib.get_close_matches(unknown[0], cls.model_fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"breaker_settings: unknown setting(s) {', '.join(unknown)}{hint}; the "
                f"settings are {', '.join(cls.model_fields)}"
            )
        try:
            return cls.model_validate(dict(value))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"]) or "value"
            raise ValueError(
                f"breaker_settings: {field}={first.get('input')!r}: {first['msg']}"
            ) from None


__all__ = ["BreakerSettings"]
