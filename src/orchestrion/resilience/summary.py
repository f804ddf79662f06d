"""What `orchestrion breakers` shows of one breaker's stored state (JSON-ready)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrion.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from orchestrion.resilience.shared_budget import BUDGET_PREFIX
from orchestrion.resilience.windows import entry_buckets, entry_horizon, number, sum_since

if TYPE_CHECKING:
    from orchestrion.store.base import Store

# How long a published outcome counts when its entry does not say (the breaker default).
_DEFAULT_HORIZON = 60.0


def breaker_summary(
    name: str, doc: Mapping[str, Any], version: int, *, now: float | None = None
) -> dict[str, Any]:
    """A JSON-ready view of one breaker's stored state.

    `failure_rate` / `slow_call_rate` / `calls`: for a closed breaker, the fleet's
    combined window: every worker's published outcomes that are still within the window
    (`workers`: how many workers they come from, alive or not); for an open or half-open
    one, the window that opened it, including outcomes reported after the transition.
    `probe_at` (wall clock) and `probe_in` (seconds, never negative): when an open breaker
    lets its next probe through; None when closed or half-open. A half-open breaker
    reports its probes in flight and the probe successes so far.
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
        outcomes = doc.get("outcomes")
        for entry in outcomes.values() if isinstance(outcomes, Mapping) else ():
            if not isinstance(entry, Mapping) or not isinstance(epoch, int):
                continue
            since = now - entry_horizon(entry, _DEFAULT_HORIZON)
            ec, ef, es = sum_since(entry_buckets(entry, epoch), since)
            if ec:
                workers += 1
                c, f, s = c + ec, f + ef, s + es
        calls = c
        failure_rate = f / c if c else 0.0
        slow_call_rate = s / c if c else 0.0
    else:
        rate = doc.get("rate")
        if isinstance(rate, Mapping):
            failure_rate = number(rate.get("failure_rate"))
            slow_call_rate = number(rate.get("slow_call_rate"))
            n = number(rate.get("calls"))
            calls = None if n is None else int(n)
    probe_at = number(doc.get("probe_at")) if state == OPEN else None
    in_flight = successes = None
    if state == HALF_OPEN:
        probes = doc.get("probes")
        probes = probes if isinstance(probes, Mapping) else {}
        claims = probes.get("claims")
        claims = claims if isinstance(claims, Mapping) else {}
        in_flight = sum(1 for e in claims.values() if (number(e) or 0.0) > now)
        successes = int(number(probes.get("successes")) or 0)
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
        "changed_at": number(doc.get("changed_at")),
    }


async def breaker_summaries(store: Store, *, now: float | None = None) -> list[dict[str, Any]]:
    """Every breaker in the store, summarised (`orchestrion breakers`, GET /v1/breakers).
    Shared retry budgets live in the same table under "budget:<dependency>": left out."""
    now = time.time() if now is None else now
    return [
        breaker_summary(name, doc, version, now=now)
        for name, doc, version in await store.list_breakers()
        if not name.startswith(BUDGET_PREFIX)
    ]


__all__ = ["breaker_summaries", "breaker_summary"]
