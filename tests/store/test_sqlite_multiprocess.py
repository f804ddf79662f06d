"""SQLite-only: several processes share one store file at once.

Each worker is a separate Python process (its own SQLite connection and locks). They wait
at a barrier, then hammer the store together. Afterwards the file must be intact and the
totals must add up: every run claimed by exactly one process, every effect key recorded
exactly once, no "database is locked" ever escaping.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrion.store import SQLiteStore
from orchestrion.store.base import EventRecord, RunRecord
from orchestrion.store.migrations import SQLITE_MIGRATIONS

PROCESSES = 4
# A hang guard for a broken store, not a timing assertion.
PROCESS_TIMEOUT = 300

WORKER = r"""
import asyncio, json, random, sys, time, traceback
from orchestrion.store import SQLiteStore
from orchestrion.store.base import EffectRecord, EventRecord, RunCompletion, StepRecord

path, me, mode, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])


def ev(run_id, seq, type="test"):
    return EventRecord(run_id=run_id, seq=seq, type=type, name=type, trace_id="t" * 32,
                       span_id=f"{seq:016x}", parent_span_id=None, start=time.time())


async def create(store, cid, count):
    await store.ensure_conversation(cid, tenant="t", agent="a", ttl_seconds=1e9,
                                    state="AWAITING_INPUT")
    for i in range(count):
        rid = f"{cid}-r{i}"
        await store.create_run(run_id=rid, conversation_id=cid, tenant="t", agent="a",
                               input={"i": i}, trace_id="t" * 32, deadline_at=None,
                               busy_policy="enqueue", event=ev(rid, 1, "run.created"))


async def execute(store, run, lease, out):
    seq = 1
    for s in range(1, params["steps"] + 1):
        seq += 1
        await store.record_step(lease, StepRecord(
            run_id=run.id, seq=s, name=f"step{s}", status="ok", result=json.dumps(s),
            error=None, idempotency_key=f"{run.id}:{s}", started_at=time.time(),
            finished_at=time.time(), epoch=lease.epoch), [ev(run.id, seq)], lease_seconds=600)
        # Keys shared by every run and process, plus keys of this run alone.
        for key in (f"shared-{(s + run.position) % params['shared_keys']}", f"{run.id}:fx{s}"):
            inserted = await store.record_effect(EffectRecord(
                idempotency_key=key, kind="email", run_id=run.id,
                conversation_id=run.conversation_id, tenant="t", payload={"by": me},
                created_at=time.time()))
            if inserted:
                out["effects"].append(key)
    assert await store.renew_lease(lease, lease_seconds=600, now=time.time()) is False
    await store.complete_run(lease, RunCompletion(
        status="succeeded", result={"by": me}, error=None,
        new_messages=[{"role": "user", "run": run.id}, {"role": "assistant", "by": me}],
        conversation_state="AWAITING_INPUT", events=[ev(run.id, seq + 1, "run.finished")]),
        now=time.time())


async def hammer(store, out):
    await create(store, f"{me}-own", params["own_runs"])
    total = params["total_runs"]
    while True:
        candidates = await store.next_claimable(agents=["a"], limit=100)
        queued = list(candidates)
        random.shuffle(queued)
        if not queued:
            finished = [r for r in await store.list_runs(limit=100000) if r.terminal]
            if len(finished) == total:
                return
            await asyncio.sleep(0.002)
            continue
        for run in queued:
            lease = await store.claim(run.id, owner=me, expected_epoch=run.epoch,
                                      lease_seconds=600, now=time.time())
            if lease is None:
                out["lost"] += 1
                continue
            out["claimed"].append(run.id)
            await execute(store, run, lease, out)


async def takeover(store, out):
    for rid in params["runs"]:
        lease = await store.claim(rid, owner=me, expected_epoch=1, lease_seconds=600,
                                  now=time.time())
        if lease is not None:
            out["claimed"].append(rid)
            await store.append_events(lease, [ev(rid, 100, "takeover")])


async def first_open(store, out):
    await create(store, f"{me}-conv", params["own_runs"])
    out["version"] = await store.schema_version()


async def main():
    out = {"claimed": [], "effects": [], "lost": 0}
    store = SQLiteStore(path)
    if mode == "first_open":
        sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
        await store.open()
    else:
        await store.open()
        sys.stdout.write("ready\n"); sys.stdout.flush(); sys.stdin.readline()
    try:
        await {"hammer": hammer, "takeover": takeover, "first_open": first_open}[mode](store, out)
    finally:
        await store.close()
    sys.stdout.write(json.dumps(out) + "\n")


try:
    asyncio.run(main())
except BaseException:
    traceback.print_exc()
    sys.exit(1)
"""


def run_workers(path: Path, mode: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Start the workers, wait until every one is ready, release them together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"p{i}", mode, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if ready != "ready\n":
                _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
                raise AssertionError(f"worker failed to start: {ready!r}\n{err}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert "locked" not in err.lower(), err
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def event(run_id: str, seq: int) -> EventRecord:
    return EventRecord(
        run_id=run_id,
        seq=seq,
        type="run.created",
        name="run.created",
        trace_id="t" * 32,
        span_id=f"{seq:016x}",
        parent_span_id=None,
        start=time.time(),
    )


async def seed(store: SQLiteStore, conversations: int, runs_each: int) -> list[RunRecord]:
    created = []
    for c in range(conversations):
        cid = f"seed-{c}"
        await store.ensure_conversation(
            cid, tenant="t", agent="a", ttl_seconds=1e9, state="AWAITING_INPUT"
        )
        for i in range(runs_each):
            rid = f"{cid}-r{i}"
            created.append(
                await store.create_run(
                    run_id=rid,
                    conversation_id=cid,
                    tenant="t",
                    agent="a",
                    input={"i": i},
                    trace_id="t" * 32,
                    deadline_at=None,
                    busy_policy="enqueue",
                    event=event(rid, 1),
                )
            )
    return created


async def test_processes_hammering_one_store_add_up(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    seed_conversations, seed_runs, own_runs, steps, shared_keys = 8, 5, 4, 3, 5
    total_runs = seed_conversations * seed_runs + PROCESSES * own_runs
    async with SQLiteStore(path) as store:
        await seed(store, seed_conversations, seed_runs)

    params = {
        "own_runs": own_runs,
        "steps": steps,
        "shared_keys": shared_keys,
        "total_runs": total_runs,
    }
    results = await asyncio.to_thread(run_workers, path, "hammer", params)

    assert integrity(path) == "ok"
    claimed = [rid for r in results for rid in r["claimed"]]
    inserted = [key for r in results for key in r["effects"]]
    async with SQLiteStore(path) as store:
        runs = await store.list_runs(limit=10_000)
        assert len(runs) == total_runs
        # Every run claimed by exactly one process, once, and finished by it.
        assert sorted(claimed) == sorted(r.id for r in runs)
        assert len(set(claimed)) == len(claimed)
        owner_of = {rid: f"p{i}" for i, r in enumerate(results) for rid in r["claimed"]}
        for run in runs:
            assert run.status == "succeeded", run
            assert run.epoch == 1 and run.owner == owner_of[run.id]
            assert run.result == {"by": run.owner}
            steps_of = await store.load_steps(run.id)
            assert sorted(steps_of) == list(range(1, steps + 1))
            assert {s.epoch for s in steps_of.values()} == {1}
            events = await store.read_events(run.id)
            assert [e.seq for e in events] == list(range(1, steps + 3))
        assert len({r.position for r in runs}) == total_runs
        # Each conversation's history holds its turns once, in queue order.
        by_conversation: dict[str, list[RunRecord]] = {}
        for run in sorted(runs, key=lambda r: r.position):
            by_conversation.setdefault(run.conversation_id, []).append(run)
        assert len(by_conversation) == seed_conversations + PROCESSES
        for cid, conv_runs in by_conversation.items():
            conv = await store.get_conversation(cid)
            assert conv.version == len(conv_runs)
            assert conv.message_count == 2 * len(conv_runs)
            history = await store.history(cid)
            assert [m["run"] for m in history if m["role"] == "user"] == [r.id for r in conv_runs]
            finished = [r.finished_at or 0 for r in conv_runs]
            assert finished == sorted(finished)  # one at a time, in order
        # Every effect key recorded exactly once, by whoever's insert returned True.
        effects = await store.list_effects()
        keys = [e.idempotency_key for e in effects]
        assert len(keys) == len(set(keys))
        assert sorted(inserted) == sorted(keys)
        assert len(keys) == shared_keys + total_runs * steps
        assert {e.payload["by"] for e in effects if e.idempotency_key.startswith("shared-")} <= {
            f"p{i}" for i in range(PROCESSES)
        }


async def test_takeover_races_have_exactly_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "takeover.db"
    async with SQLiteStore(path) as store:
        runs = await seed(store, 12, 1)
        for run in runs:
            assert await store.claim(
                run.id, owner="dead", expected_epoch=0, lease_seconds=1, now=time.time() - 10
            )
    run_ids = [r.id for r in runs]
    results = await asyncio.to_thread(run_workers, path, "takeover", {"runs": run_ids})

    assert integrity(path) == "ok"
    claimed = [rid for r in results for rid in r["claimed"]]
    assert sorted(claimed) == sorted(run_ids)
    owner_of = {rid: f"p{i}" for i, r in enumerate(results) for rid in r["claimed"]}
    async with SQLiteStore(path) as store:
        for rid in run_ids:
            run = await store.get_run(rid)
            assert (run.status, run.epoch, run.owner) == ("running", 2, owner_of[rid])
            assert [e.type for e in await store.read_events(rid)] == ["run.created", "takeover"]


async def test_processes_creating_the_store_at_once(tmp_path: Path) -> None:
    path = tmp_path / "brand-new.db"
    results = await asyncio.to_thread(run_workers, path, "first_open", {"own_runs": 3})

    assert integrity(path) == "ok"
    assert {r["version"] for r in results} == {len(SQLITE_MIGRATIONS)}
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS)
        runs = await store.list_runs()
        assert len(runs) == PROCESSES * 3
        assert len({r.position for r in runs}) == len(runs)
        for i in range(PROCESSES):
            assert (await store.get_conversation(f"p{i}-conv")).tenant == "t"
