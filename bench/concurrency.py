"""Many turns in flight in one process: what the runtime adds over the latencies it waits for.

1,000 turns (`--quick`: 50) are sent through `Orchestrion.send` in one process, every
setting default. Each turn is the agent of `bench steps` with simulated latencies: its
`ScriptedModel(latency=0.2)` calls a tool that sleeps 20 ms (`asyncio.sleep`), 2 times in
sequence, then answers: 3 model calls and 2 tool calls, 640 ms of simulated latency.
Two phases, one after the other on the same store:
- arrivals spread evenly over one turn's simulated time (640 ms), so that all 1,000 are in
  flight together once the last has arrived: the target of issue 12 (added p99 <= 50 ms)
  applies here;
- all 1,000 arriving at the same instant (a thundering herd: its submits queue behind each
  other).

Reported for each: added latency per turn (from its planned arrival to the end of `send`,
minus the 640 ms it waits for by construction), p50, p99 and max; turns per second and
the store's commits per second over the phase (COMMIT statements on SQLite, store write
calls on PostgreSQL); event-loop lag (how late a 10 ms timer fires: what one blocking
write or a long stretch of Python costs every other turn); RSS growth over the phase
(VmRSS). Then the process's peak RSS (VmHWM).

Store: a temporary SQLite file (durability normal), beside the given one with
`--store sqlite:///...`, or a throwaway schema with `--store postgresql://...`.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

from orchestrion import Orchestrion

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the CLI loads benchmarks by path: let them find _workload
    sys.path.insert(0, _HERE)
import _workload as w  # noqa: E402

TOOL_CALLS = 2
MODEL_LATENCY = 0.2
TOOL_LATENCY = 0.02
LAG_TICK = 0.01
TARGET_P99_MS = 50.0


def _memory_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in kB."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        return peak, peak


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + LAG_TICK
        await asyncio.sleep(LAG_TICK)
        lags.append(max(0.0, loop.time() - due))


async def _phase(orx: Orchestrion, turns: int, spread: float) -> dict[str, Any]:
    """`turns` sends, arriving evenly over `spread` seconds (0: all at once). A turn's added
    latency is counted from its planned arrival, so a late loop counts against it."""
    simulated = w.simulated_seconds(TOOL_CALLS, MODEL_LATENCY, TOOL_LATENCY)
    rss_before, _ = _memory_kb()
    counter = w.StoreCounter(orx.store).install()
    added: list[float] = []
    failed: list[str] = []
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.05

    async def one(arrival: float) -> None:
        await asyncio.sleep(max(0.0, arrival - loop.time()))
        result = await orx.send(w.AGENT, "go")
        added.append(loop.time() - arrival - simulated)
        if result.status != "succeeded":
            failed.append(f"{result.status}: {result.error}")

    stop, lags = asyncio.Event(), []
    probe = asyncio.create_task(_lag_probe(stop, lags))
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(turns):
                group.create_task(one(begin + spread * i / turns))
    finally:
        wall = loop.time() - begin
        stop.set()
        await probe
        counter.remove()
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark turn(s) did not succeed: {failed[0]}")
    rss_after, _ = _memory_kb()
    commits = counter.commits if counter.sqlite else counter.writes
    return {
        "spread_ms": round(spread * 1000, 1),
        "added_ms_p50": round(w.percentile(added, 0.50) * 1000, 1),
        "added_ms_p99": round(w.percentile(added, 0.99) * 1000, 1),
        "added_ms_max": round(max(added) * 1000, 1),
        "turns_per_s": round(turns / wall, 1),
        "commits_per_s": round(commits / wall, 1),
        "commits_per_turn": round(commits / turns, 2),
        "loop_lag_ms_p99": round(w.percentile(lags, 0.99) * 1000, 1) if lags else 0.0,
        "loop_lag_ms_max": round(max(lags) * 1000, 1) if lags else 0.0,
        "rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
    }


async def _measure(url: str, turns: int) -> dict[str, Any]:
    agent = w.sequential_agent(TOOL_CALLS, model_latency=MODEL_LATENCY, tool_latency=TOOL_LATENCY)
    simulated = w.simulated_seconds(TOOL_CALLS, MODEL_LATENCY, TOOL_LATENCY)
    async with Orchestrion(url, agents=[agent]) as orx:
        await orx.send(w.AGENT, "warm up")
        phases = {
            "spread": await _phase(orx, turns, simulated),
            "burst": await _phase(orx, turns, 0.0),
        }
    return {
        "turns": turns,
        "simulated_ms_per_turn": round(simulated * 1000, 1),
        "phases": phases,
        "rss_peak_mb": round(_memory_kb()[1] / 1024, 1),
    }


def _lines(r: dict[str, Any], where: str) -> list[str]:
    spread = r["phases"]["spread"]
    verdict = "met" if spread["added_ms_p99"] <= TARGET_P99_MS else "NOT met"
    commits = "COMMITs" if r["store"] == "sqlite" else "store write calls"
    lines = [
        f"{r['turns']} turns in flight in one process (Orchestrion.send, defaults) on {where}",
        f"  each: {TOOL_CALLS + 1} model calls of {MODEL_LATENCY * 1000:g} ms and {TOOL_CALLS} "
        f"tool calls of {TOOL_LATENCY * 1000:g} ms in sequence = "
        f"{r['simulated_ms_per_turn']:g} ms simulated; added latency = time from a turn's "
        "arrival to the end of `send`, minus that",
        f"  {'arrivals':24} {'added ms p50':>12} {'p99':>8} {'max':>8} {'turns/s':>8} "
        f"{commits + '/s':>10} {'per turn':>8} {'loop lag ms p99':>15} {'max':>7} "
        f"{'RSS +MB':>7}",
    ]
    for name, label in (("spread", f"over {spread['spread_ms']:g} ms (one turn)"),
                        ("burst", "all at once")):  # fmt: skip
        ph = r["phases"][name]
        lines.append(
            f"  {label:24} {ph['added_ms_p50']:>12g} {ph['added_ms_p99']:>8g} "
            f"{ph['added_ms_max']:>8g} {ph['turns_per_s']:>8g} {ph['commits_per_s']:>10g} "
            f"{ph['commits_per_turn']:>8g} {ph['loop_lag_ms_p99']:>15g} "
            f"{ph['loop_lag_ms_max']:>7g} {ph['rss_growth_mb']:>7g}"
        )
    lines += [
        f"  target (issue 12): added p99 <= {TARGET_P99_MS:g} ms with the arrivals spread: "
        f"{verdict}",
        f"  event-loop lag: how late a {LAG_TICK * 1000:g} ms timer fires; peak RSS of the "
        f"process {r['rss_peak_mb']:g} MB",
    ]
    return lines


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    turns = 50 if quick else 1000
    if w.is_postgres(store):
        assert store is not None
        from orchestrion.store.postgres import parse_postgres_url

        conninfo, _schema, where = parse_postgres_url(store)
        with w.pg_schemas(conninfo) as schema:
            result = asyncio.run(_measure(w.pg_schema_url(store, schema("burst")), turns))
        result["throwaway_prefix"] = schema.prefix
        result.update(store="postgresql", where=f"PostgreSQL at {where} (a throwaway schema)")
    else:
        near = w.sqlite_folder(store, "concurrency")
        with tempfile.TemporaryDirectory(prefix="orchestrion-bench-", dir=near) as folder:
            result = asyncio.run(_measure(f"sqlite:///{Path(folder) / 'burst.db'}", turns))
        where = near or tempfile.gettempdir()
        result.update(store="sqlite", where=f"a temporary SQLite file in {where}")
    result["lines"] = _lines(result, result["where"])
    return result
