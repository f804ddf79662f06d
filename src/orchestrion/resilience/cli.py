"""`orchestrion breakers`: the circuit breakers every worker shares through the store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

import click

from orchestrion.errors import OrchestrionError
from orchestrion.resilience.summary import breaker_summaries


class _Settings(Protocol):
    store: str
    durability: str


def _fmt_at(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _next_probe(row: dict[str, Any]) -> str:
    if row["state"] == "open":
        if row["probe_at"] is None:
            return "unknown"
        if row["probe_in"] <= 0:
            return f"{_fmt_at(row['probe_at'])} (due: the next call probes)"
        return f"{_fmt_at(row['probe_at'])} (in {row['probe_in']:.1f}s)"
    if row["state"] == "half_open":
        return f"probing now ({row['probes_in_flight']} in flight, {row['probe_successes']} ok)"
    return "-"


async def _load(settings: _Settings) -> list[dict[str, Any]] | None:
    from orchestrion.errors import NoStore
    from orchestrion.store import open_store

    # A listing never creates a store (file or schema).
    store = open_store(settings.store, durability=settings.durability, create=False)  # type: ignore[arg-type]
    try:
        async with store:
            return await breaker_summaries(store)
    except NoStore:
        return None


@click.command("breakers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def breakers(settings: _Settings, as_json: bool) -> None:
    """List the circuit breakers in the store: state, failure rate, calls, next probe.

    A closed breaker shows the fleet's combined window as each worker last published it;
    an open or half-open one shows the window that opened it.
    """
    try:
        rows = asyncio.run(_load(settings))
    except OrchestrionError as exc:
        raise click.ClickException(str(exc)) from None
    if rows is None:
        if not as_json:
            click.echo(f"no store at {settings.store} yet, so no breakers")
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo(
            "no breakers recorded yet (a process publishes its calls to a dependency within "
            "a second, and when it closes)"
        )
        return
    width = max(len("BREAKER"), *(len(r["name"]) for r in rows))
    click.echo(f"{'BREAKER':<{width}}  {'STATE':<9}  {'FAILURES':>8}  {'CALLS':>6}  NEXT PROBE")
    for r in rows:
        calls = "-" if r["calls"] is None else str(r["calls"])
        click.echo(
            f"{r['name']:<{width}}  {r['state']:<9}  {_fmt_rate(r['failure_rate']):>8}  "
            f"{calls:>6}  {_next_probe(r)}"
        )
