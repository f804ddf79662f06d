"""What a durable step costs: first through the public API, then the journal alone.

1. The public-API figure (issues 12 and 19), the one to quote: `Orchestrion.send` of an
   `Agent` whose `ScriptedModel` calls an async no-op `@tool` 10 times in sequence, then
   answers (11 model steps, 10 tool steps per turn), every setting default, a new
   conversation per turn. Reported as µs per tool call (turn time / 10) at durability
   `normal` and `full`, each next to a raw SQLite WAL commit (a single-row INSERT) at the
   same `synchronous` level, measured in the same process in interleaved repetitions
   (medians; the ratio is the median of the per-repetition ratios). Then, from a few more
   turns with counters installed (not timed): commits per turn (COMMIT statements on the
   store's connection), rows changed per turn, store write calls per turn and events per
   turn.
2. Inner figure: `Journal.step` alone (consult the journal, run a no-op, commit the step
   record with its span event and the lease renewal), next to the same raw commit. It is
   a component's cost, not comparable with any end-to-end figure.

With `store="postgresql://..."` (`orchestrion bench steps --store postgresql://...`) it
measures the PostgreSQL backend, in throwaway schemas of that database it drops: the same
public-API figure next to a raw single-row INSERT commit on the same server (commits
counted as store write calls, each one transaction), then the journal alone, then turns
per second of the demo agent with 1, 2 and 4 `orchestrion worker` processes (for the
fleet's scaling against the server's commit rate, see `bench fleet`).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrion import Orchestrion
from orchestrion.engine.journal import Journal, StepInfo
from orchestrion.observe.events import RunEmitter, new_trace_id, run_span_id
from orchestrion.store.base import EventRecord, Store
from orchestrion.store.sqlite import SQLiteStore

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the CLI loads benchmarks by path: let them find _workload
    sys.path.insert(0, _HERE)
import _workload as w  # noqa: E402

STEPS_PER_DEMO_TURN = 6
DURABILITIES = (("normal", "NORMAL"), ("full", "FULL"))


# ---- 1. the public API ---------------------------------------------------------------------


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    """(repetitions, turns per repetition, raw commits per repetition, counted turns)"""
    return (2, 2, 20, 2) if quick else (5, 40, 400, 5)


async def _turns_us_per_tool_call(orx: Orchestrion, turns: int) -> float:
    start = time.perf_counter()
    for _ in range(turns):
        result = await orx.send(w.AGENT, "go")
        if result.status != "succeeded" or result.answer != w.ANSWER:
            raise RuntimeError(f"a benchmark turn ended {result.status}: {result.error}")
    return (time.perf_counter() - start) / turns / w.TOOL_CALLS * 1e6


async def _count_turns(orx: Orchestrion, turns: int) -> dict[str, float]:
    """Medians per turn of what the store was made to write (counters installed, so these
    turns are not timed)."""
    counter = w.StoreCounter(orx.store).install()
    per_turn: dict[str, list[float]] = {"commits": [], "rows": [], "writes": [], "events": []}
    try:
        for _ in range(turns):
            writes, commits, rows = counter.snapshot()
            result = await orx.send(w.AGENT, "go")
            per_turn["writes"].append(counter.writes - writes)
            per_turn["commits"].append(counter.commits - commits)
            per_turn["rows"].append(counter.rows - rows)
            per_turn["events"].append(len(await orx.store.read_events(result.run_id)))
    finally:
        counter.remove()
    medians = {key: w.median(values) for key, values in per_turn.items()}
    if not counter.sqlite:
        del medians["commits"], medians["rows"]
    return medians


async def _public_api_sqlite(base: Path, quick: bool) -> dict[str, Any]:
    reps, turns, raw_commits, counted = _sizes(quick)
    results: dict[str, Any] = {}
    orxs = {
        d: Orchestrion(
            f"sqlite:///{base / f'api-{d}.db'}", agents=[w.sequential_agent()], durability=d
        )
        for d, _ in DURABILITIES
    }
    raws = {d: w.RawSQLiteCommit(base / f"raw-{d}.db", sync) for d, sync in DURABILITIES}
    try:
        for orx in orxs.values():
            await orx.open()
            await _turns_us_per_tool_call(orx, 2)  # warm up: imports, schemas, caches
        api: dict[str, list[float]] = {d: [] for d in orxs}
        raw: dict[str, list[float]] = {d: [] for d in orxs}
        for rep in range(reps):
            order = list(orxs) if rep % 2 == 0 else list(reversed(orxs))
            for d in order:
                api[d].append(await _turns_us_per_tool_call(orxs[d], turns))
                raw[d].append(raws[d].measure(raw_commits))
        for d in orxs:
            ratios = [a / r for a, r in zip(api[d], raw[d], strict=True)]
            results[f"api_us_per_tool_call_{d}"] = round(w.median(api[d]), 1)
            results[f"api_raw_commit_us_{d}"] = round(w.median(raw[d]), 1)
            results[f"api_ratio_{d}"] = round(w.median(ratios), 2)
            for key, value in (await _count_turns(orxs[d], counted)).items():
                results[f"api_{key}_per_turn_{d}"] = value
    finally:
        for orx in orxs.values():
            await orx.close()
        for r in raws.values():
            r.close()
    results.update(api_turns=reps * turns, api_repetitions=reps, api_counted_turns=counted)
    return results


def _api_header(results: dict[str, Any]) -> list[str]:
    return [
        "public API: Orchestrion.send, an Agent whose ScriptedModel calls an async no-op @tool "
        f"{w.TOOL_CALLS} times in sequence, then answers; defaults, a new conversation per turn",
        f"  {results['api_turns']} timed turns in {results['api_repetitions']} repetitions "
        "interleaved with the raw commits; medians; counts are medians of "
        f"{results['api_counted_turns']} more turns with counters installed",
    ]


def _public_api_lines(results: dict[str, Any], where: str) -> list[str]:
    lines = [
        *_api_header(results),
        f"  in temporary SQLite files in {where}",
        f"  {'durability':10} {'µs/tool call':>12} {'raw WAL commit µs':>18} {'ratio':>7} "
        f"{'commits/turn':>13} {'rows/turn':>10} {'events/turn':>12}",
    ]
    for d, _ in DURABILITIES:
        lines.append(
            f"  {d:10} {results[f'api_us_per_tool_call_{d}']:>12.1f} "
            f"{results[f'api_raw_commit_us_{d}']:>18.1f} {results[f'api_ratio_{d}']:>7.2f} "
            f"{results[f'api_commits_per_turn_{d}']:>13g} {results[f'api_rows_per_turn_{d}']:>10g} "
            f"{results[f'api_events_per_turn_{d}']:>12g}"
        )
    verdict = "met" if results["api_us_per_tool_call_normal"] <= 150 else "NOT met"
    lines.append(f"  target (issue 12): <= 150 µs per tool call at durability normal: {verdict}")
    return lines


# ---- 2. inner figure: the journal alone ----------------------------------------------------


async def _noop(info: StepInfo) -> None:
    return None


async def _steps_per_run(path: Path, durability: str, steps: int) -> float:
    """µs per step for one run of `steps` no-op steps."""
    return await _steps_on(SQLiteStore(path, durability=durability), steps)  # type: ignore[arg-type]


async def _steps_on(store: Store, steps: int) -> float:
    """µs per step for one run of `steps` no-op steps on an unopened store."""
    await store.open()
    try:
        run_id, trace_id, now = f"run_{time.monotonic_ns()}", new_trace_id(), time.time()
        await store.ensure_conversation(
            run_id, tenant="t", agent="bench", ttl_seconds=3600, state="AWAITING_INPUT"
        )
        await store.create_run(
            run_id=run_id,
            conversation_id=run_id,
            tenant="t",
            agent="bench",
            input={},
            trace_id=trace_id,
            deadline_at=None,
            busy_policy="enqueue",
            event=EventRecord(
                run_id=run_id,
                seq=1,
                type="run.queued",
                name="queued",
                trace_id=trace_id,
                span_id="q",
                parent_span_id=run_span_id(run_id),
                start=now,
                end=now,
            ),
        )
        lease = await store.claim(
            run_id, owner="bench", expected_epoch=0, lease_seconds=60, now=time.time()
        )
        assert lease is not None
        emitter = RunEmitter(run_id, trace_id, next_seq=2)
        journal = Journal(store, lease, emitter, {}, lease_seconds=60)
        start = time.perf_counter()
        for _ in range(steps):
            await journal.step("noop", _noop)
        elapsed = time.perf_counter() - start
        return elapsed / steps * 1e6
    finally:
        await store.close()


def _journal_sqlite(base: Path, quick: bool) -> dict[str, Any]:
    steps = 50 if quick else 2000
    repeats = 1 if quick else 3
    results: dict[str, Any] = {"steps_per_run": steps, "repeats": repeats}
    for durability, sync in DURABILITIES:
        step: list[float] = []
        raw: list[float] = []
        for rep in range(repeats):
            db = base / f"steps-{durability}-{rep}.db"
            step.append(asyncio.run(_steps_per_run(db, durability, steps)))
            baseline = w.RawSQLiteCommit(base / f"raw-inner-{durability}.db", sync)
            raw.append(baseline.measure(steps))
            baseline.close()
        results[f"step_us_{durability}"] = round(w.median(step), 1)
        results[f"raw_commit_us_{durability}"] = round(w.median(raw), 1)
        results[f"ratio_{durability}"] = round(w.median(step) / w.median(raw), 2)
    return results


def _journal_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "inner figure (a component, not comparable with end-to-end figures): Journal.step "
        f"alone, runs of {results['steps_per_run']} no-op steps, median of {results['repeats']}",
        f"  {'durability':10} {'step µs':>12} {'raw WAL commit µs':>18} {'ratio':>7}",
    ]
    for d, _ in DURABILITIES:
        lines.append(
            f"  {d:10} {results[f'step_us_{d}']:>12.1f} "
            f"{results[f'raw_commit_us_{d}']:>18.1f} {results[f'ratio_{d}']:>7.2f}"
        )
    return lines


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    if w.is_postgres(store):
        assert store is not None
        return run_postgres(store, quick=quick)
    near = w.sqlite_folder(store, "steps")
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-", dir=near) as folder:
        base = Path(folder)
        results = asyncio.run(_public_api_sqlite(base, quick))
        results.update(_journal_sqlite(base, quick))
    where = str(near or tempfile.gettempdir())
    results["lines"] = _public_api_lines(results, where) + _journal_lines(results)
    return results


# ---- PostgreSQL ------------------------------------------------------------------------------


async def _public_api_postgres(
    url: str, raw_base: w.RawPostgresCommit, quick: bool
) -> dict[str, Any]:
    reps, turns, raw_commits, counted = _sizes(quick)
    api: list[float] = []
    raw: list[float] = []
    async with Orchestrion(url, agents=[w.sequential_agent()]) as orx:
        await _turns_us_per_tool_call(orx, 2)  # warm up
        for rep in range(reps):
            if rep % 2:
                raw.append(raw_base.measure(raw_commits))
            api.append(await _turns_us_per_tool_call(orx, turns))
            if not rep % 2:
                raw.append(raw_base.measure(raw_commits))
        counts = await _count_turns(orx, counted)
    results: dict[str, Any] = {
        "api_us_per_tool_call_postgres": round(w.median(api), 1),
        "api_raw_commit_us_postgres": round(w.median(raw), 1),
        "api_ratio_postgres": round(w.median([a / r for a, r in zip(api, raw, strict=True)]), 2),
        "api_turns": reps * turns,
        "api_repetitions": reps,
        "api_counted_turns": counted,
    }
    for key, value in counts.items():
        results[f"api_{key}_per_turn_postgres"] = value
    return results


def _pg_turns_per_second(url: str, conninfo: str, schema: str, workers: int, turns: int) -> float:
    """Queue `turns` demo turns, then let `workers` worker processes run them."""
    asyncio.run(w.submit_demo_turns(url, turns))
    procs = w.start_workers(url, workers, "--concurrency", "4")
    try:
        return w.wait_finished(conninfo, schema, turns, workers)
    finally:
        w.stop_workers(procs)


def run_postgres(url: str, quick: bool = False) -> dict[str, Any]:
    from orchestrion.store.postgres import PostgresStore, parse_postgres_url

    steps = 50 if quick else 2000
    repeats = 1 if quick else 3
    turns = 20 if quick else 200
    conninfo, _schema, where = parse_postgres_url(url)
    results: dict[str, Any] = {
        "store": "postgresql",
        "server": where,
        "steps_per_run": steps,
        "repeats": repeats,
        "turns": turns,
    }
    with w.pg_schemas(conninfo) as schema:
        results["throwaway_prefix"] = schema.prefix
        raw_base = w.RawPostgresCommit(conninfo, schema("raw"))
        try:
            api_url = w.pg_schema_url(url, schema("api"))
            results.update(asyncio.run(_public_api_postgres(api_url, raw_base, quick)))
        finally:
            raw_base.close()
        step_url = w.pg_schema_url(url, schema("steps"))
        step = [asyncio.run(_steps_on(PostgresStore(step_url), steps)) for _ in range(repeats)]
        baseline = w.RawPostgresCommit(conninfo, schema("rawinner"))
        try:
            raw_us = baseline.measure(steps * repeats)
        finally:
            baseline.close()
        results["step_us_postgres"] = round(w.median(step), 1)
        results["raw_commit_us_postgres"] = round(raw_us, 1)
        results["ratio_postgres"] = round(w.median(step) / raw_us, 2)
        for workers in (1, 2, 4):
            name = schema(f"w{workers}")
            rate = _pg_turns_per_second(w.pg_schema_url(url, name), conninfo, name, workers, turns)
            results[f"turns_per_s_{workers}_workers"] = round(rate, 1)
    lines = [
        *_api_header(results),
        f"  on PostgreSQL at {where}, in throwaway schemas; commits counted as store write "
        "calls (each one transaction)",
        f"  {'store':10} {'µs/tool call':>12} {'raw INSERT commit µs':>21} {'ratio':>7} "
        f"{'writes/turn':>12} {'events/turn':>12}",
        f"  {'postgresql':10} {results['api_us_per_tool_call_postgres']:>12.1f} "
        f"{results['api_raw_commit_us_postgres']:>21.1f} {results['api_ratio_postgres']:>7.2f} "
        f"{results['api_writes_per_turn_postgres']:>12g} "
        f"{results['api_events_per_turn_postgres']:>12g}",
        "inner figure (a component, not comparable with end-to-end figures): Journal.step "
        f"alone, runs of {steps} no-op steps, median of {repeats}",
        f"  {'store':10} {'step µs':>12} {'raw INSERT commit µs':>21} {'ratio':>7}",
        f"  {'postgresql':10} {results['step_us_postgres']:>12.1f} "
        f"{results['raw_commit_us_postgres']:>21.1f} {results['ratio_postgres']:>7.2f}",
        f"demo turns ({STEPS_PER_DEMO_TURN} durable steps each), {turns} queued, "
        "worker processes with --concurrency 4 (see `bench fleet` for the scaling table):",
    ]
    for workers in (1, 2, 4):
        lines.append(
            f"  {workers} worker(s): {results[f'turns_per_s_{workers}_workers']:>8.1f} turns/s"
        )
    results["lines"] = lines
    return results
