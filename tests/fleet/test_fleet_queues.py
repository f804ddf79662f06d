"""Fleet-wide queue limits and cross-process streaming on PostgreSQL, with real
`orchestrion worker` processes. Nothing is timed: timeouts are hang guards."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrion import Orchestrion
from tests.fleet.agents import limited, slow
from tests.fleet.support import Fleet, all_settled, check_exactly_once, count_where, run
from tests.store.pg import fresh_schema

HANG_GUARD = 180.0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fresh_schema("fleetq") as schema:
        fleet = Fleet(schema, tmp_path)
        try:
            yield fleet
        finally:
            fleet.stop_all()


async def _submit(url: str, plan: list[tuple[str, str]]) -> list[str]:
    """Queue one turn per (agent, conversation); returns the run ids."""
    async with Orchestrion(url, agents=[slow, limited]) as orx:
        runs = [
            await orx.submit(
                agent, f"I'm customer 42, {cid} turn 0: move me to Friday 0:00", conversation=cid
            )
            for agent, cid in plan
        ]
    return [r.id for r in runs]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = level = 0
    for _, delta in points:
        level += delta
        best = max(best, level)
    return best


def test_max_concurrent_runs_holds_across_three_worker_processes(fleet: Fleet) -> None:
    for _ in range(3):
        fleet.start(app="tests.fleet.agents:both", concurrency=4)
    plan = [("limited", f"lim-{i}") for i in range(12)] + [("slow", f"free-{i}") for i in range(6)]
    run_ids = run(_submit(fleet.url, plan))
    limited_ids, free_ids = run_ids[:12], run_ids[12:]
    # Sample while they work: never more than 2 "limited" runs running.
    most_limited = most_total = 0
    deadline = time.monotonic() + HANG_GUARD
    while not all_settled(fleet.schema, len(run_ids)):
        assert time.monotonic() < deadline, "\n".join(fleet.log(p)[-2000:] for p in fleet.procs)
        most_limited = max(
            most_limited,
            count_where(
                fleet.schema,
                "SELECT count(*) FROM {s}.runs WHERE status = 'running' AND agent = 'limited'",
            ),
        )
        most_total = max(
            most_total,
            count_where(fleet.schema, "SELECT count(*) FROM {s}.runs WHERE status = 'running'"),
        )
        time.sleep(0.02)
    assert most_limited <= 2
    # The other queue was not held back by the full one: more than 2 runs ran at once.
    assert most_total > 2
    facts = run(check_exactly_once(fleet.url, run_ids, 1))
    assert facts["epochs"] == {1: len(run_ids)}  # each turn claimed once, none resumed
    assert len(facts["owners"]) >= 2

    # Afterwards, from the journal: each run's steps span a part of its running time, so
    # no instant may have more than 2 "limited" runs between their first and last step.
    async def spans(ids: list[str]) -> list[tuple[float, float]]:
        async with Orchestrion(fleet.url, agents=[slow, limited]) as orx:
            out = []
            for rid in ids:
                steps = (await orx.store.load_steps(rid)).values()
                out.append((min(s.started_at for s in steps), max(s.finished_at for s in steps)))
            return out

    assert _max_overlap(run(spans(limited_ids))) == 2  # the limit, and it was used
    assert _max_overlap(run(spans(free_ids))) > 2  # the unlimited queue ran wider


async def _subscribe_to_a_run_of(fleet: Fleet) -> tuple[list[int], list[str], str, list[int]]:
    """Submit a turn, subscribe to it until it ends; (seqs, types, owner, stored seqs)."""
    async with Orchestrion(fleet.url, agents=[slow]) as orx:
        assert orx.store.notifies_events
        queued = await orx.submit(slow, "I'm customer 42: move me to Friday 10:00")
        seqs: list[int] = []
        types: list[str] = []

        async def read() -> None:
            async for ev in orx.subscribe(queued.id):
                seqs.append(ev.seq)
                types.append(ev.type)

        await asyncio.wait_for(read(), HANG_GUARD)
        done = await orx.store.get_run(queued.id)
        stored = [e.seq for e in await orx.store.read_events(queued.id)]
        assert done.owner is not None
        return seqs, types, done.owner, stored


def test_a_subscriber_streams_a_run_executed_by_another_process(fleet: Fleet) -> None:
    worker = fleet.start(concurrency=2)
    seqs, types, owner, stored = run(_subscribe_to_a_run_of(fleet))
    assert f"/{worker.pid}/" in owner, (owner, fleet.log(worker))
    assert f"/{os.getpid()}/" not in owner
    # Stored events, once each and in order, up to the end of the run.
    assert seqs == sorted(set(seqs)) and set(seqs) <= set(stored)
    assert types[-1] == "run.finished" and "run.started" in types
    assert len(seqs) > 10  # steps, tool calls and text were streamed, not just the ends
    assert stored == list(range(1, len(stored) + 1))


def test_a_subscriber_receives_every_event_of_a_run_of_another_process(fleet: Fleet) -> None:
    fleet.start(concurrency=2)
    for _ in range(3):
        seqs, _types, _owner, stored = run(_subscribe_to_a_run_of(fleet))
        assert seqs == stored
