"""The resilience layer's state in the store: breakers shared by processes, retry attempts
that survive a crash, the registry of per-dependency breakers, and `orchestrion breakers`.

The multi-process tests run real Python processes (tests/resilience/shared_state_worker.py)
on one SQLite file; they talk to the test over stdin/stdout.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrion.errors import LeaseLost, ProviderUnavailable
from orchestrion.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Attempt,
    AttemptState,
    BreakerOpen,
    CircuitBreaker,
    FakeClock,
    InMemoryBreakerStore,
    ResiliencePipeline,
    RetryPolicy,
)
from orchestrion.resilience.attempts import StepAttemptJournal
from orchestrion.resilience.cli import breakers
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.resilience.shared_state import StoreBreakerState
from orchestrion.resilience.summary import breaker_summary
from orchestrion.store import SQLiteStore
from orchestrion.store.base import EventRecord, Lease
from orchestrion.store.migrations import SQLITE_APPLICATION_ID, SQLITE_MIGRATIONS

WORKER = Path(__file__).with_name("shared_state_worker.py")
# A hang guard for a broken worker, not a timing assertion.
HANG_GUARD = 120.0

Events = list[tuple[str, dict[str, Any]]]


# ---- worker processes -------------------------------------------------------------------


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, mode: str, path: Path, name: str, params: dict[str, Any]) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            mode,
            str(path),
            name,
            json.dumps(params),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = cls(proc, name)
        assert await worker.line() == "ready"
        return worker

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), HANG_GUARD)
        if not raw:
            assert self.proc.stderr is not None
            err = await asyncio.wait_for(self.proc.stderr.read(), HANG_GUARD)
            raise AssertionError(f"worker {self.name} ended early:\n{err.decode()}")
        return raw.decode().rstrip("\n")

    async def json(self) -> dict[str, Any]:
        line = await self.line()
        try:
            value: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"worker {self.name} said {line!r}") from None
        return value

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{text}\n".encode())
        await self.proc.stdin.drain()

    async def finish(self) -> list[dict[str, Any]]:
        """Wait for a clean exit; return the JSON lines not read yet."""
        out, err = await asyncio.wait_for(self.proc.communicate(), HANG_GUARD)
        stderr = err.decode()
        assert "locked" not in stderr.lower(), stderr
        assert self.proc.returncode == 0, stderr
        return [json.loads(line) for line in out.decode().splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def workers() -> AsyncIterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for w in started:
            w.kill()
        for w in started:
            await w.proc.wait()


async def start_all(
    workers: list[Worker], mode: str, path: Path, names: list[str], params: dict[str, Any]
) -> list[Worker]:
    group = await asyncio.gather(*(Worker.start(mode, path, n, params) for n in names))
    workers.extend(group)
    return list(group)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


async def stored_breaker(path: Path, name: str = "llm") -> dict[str, Any]:
    async with SQLiteStore(path) as store:
        doc, version = await store.breaker_load(name)
    assert doc is not None and version >= 1
    return doc


# ---- (a) one breaker for a fleet of processes ----------------------------------------------

FAILERS = 4
PER_PROCESS = 5
BREAKER = {
    "minimum_calls": 12,  # more than any one process records: only the fleet can trip it
    "window_size": 100,
    "failure_rate_threshold": 0.5,
    "slow_call_duration": None,
    "wait_in_open": 600.0,  # stays open for the whole test on the real clock
    "half_open_probes": 2,
    "sync_every": 1,  # publish every outcome: maximal contention on the row
    "sync_interval": 0.05,
    "peer_ttl": 600.0,
}


async def test_processes_share_one_breaker_through_the_store(
    tmp_path: Path, workers: list[Worker]
) -> None:
    path = tmp_path / "fleet.db"
    async with SQLiteStore(path):
        pass  # create the file up front

    # Several processes record failures on "llm" at once.
    params = {"breaker": BREAKER, "per_process": PER_PROCESS, "patience": 60.0}
    failers = await start_all(workers, "fail", path, [f"f{i}" for i in range(FAILERS)], params)
    for w in failers:
        await w.send("go")
    results = [await w.json() for w in failers]
    for w in failers:
        await w.finish()

    failures = [r["failures"] for r in results]
    assert max(failures) <= PER_PROCESS < BREAKER["minimum_calls"]
    doc = await stored_breaker(path)
    assert (doc["state"], doc["epoch"]) == (OPEN, 1)  # opened once, for everyone
    assert doc["rate"]["failure_rate"] == 1.0
    assert doc["rate"]["calls"] >= BREAKER["minimum_calls"]
    assert doc["probe_at"] > time.time() + 500
    decided = []
    for r in results:
        assert (r["state"], r["epoch"]) == (OPEN, 1)
        # The last call failed fast, naming the breaker, without running.
        assert r["called"] is False
        assert r["outcome"]["breaker"] == "llm" and r["outcome"]["state"] == OPEN
        assert r["outcome"]["message"].startswith("circuit breaker 'llm' is open")
        types = [t for t, _ in r["events"]]
        assert "breaker.store_error" not in types, r["events"]
        (move,) = [a for t, a in r["events"] if t == "breaker.transition"]
        assert (move["from"], move["to"], move["epoch"]) == (CLOSED, OPEN, 1)
        decided.append(move["source"])
    # Exactly one process decided the transition; the others adopted it from the store.
    assert sorted(decided) == ["local"] + ["store"] * (FAILERS - 1)

    # A restart: a new process with a new store object, which recorded nothing itself.
    (observer,) = await start_all(workers, "observe", path, ["o1"], {"breaker": BREAKER})
    await observer.send("go")
    seen = await observer.json()
    await observer.finish()
    assert seen["called"] is False and seen["state"] == OPEN
    assert seen["outcome"]["breaker"] == "llm" and seen["outcome"]["state"] == OPEN
    assert seen["outcome"]["probe_at"] == pytest.approx(doc["probe_at"])
    assert "next probe at" in seen["outcome"]["message"]
    (adopted,) = [a for t, a in seen["events"] if t == "breaker.transition"]
    assert adopted["source"] == "store"

    # Later (probers run on a clock past probe_at): half-open lets 2 probes in, fleet-wide.
    later = {"breaker": BREAKER, "offset": BREAKER["wait_in_open"] + 60.0}
    probers = await start_all(workers, "probe", path, [f"p{i}" for i in range(4)], later)
    for w in probers:
        await w.send("go")
    answers = [await w.json() for w in probers]
    granted = [a for a in answers if a["granted"]]
    refused = [a for a in answers if not a["granted"]]
    assert len(granted) == BREAKER["half_open_probes"]
    assert len({a["probe"] for a in granted}) == len(granted)
    for a in refused:
        assert (a["breaker"], a["state"]) == ("llm", HALF_OPEN)
        assert "all half-open probe slots are taken" in a["message"]
    doc = await stored_breaker(path)
    assert (doc["state"], doc["epoch"]) == (HALF_OPEN, 2)
    assert len(doc["probes"]["claims"]) == BREAKER["half_open_probes"]
    # The probes succeed: the breaker closes for everyone.
    for w in probers:
        await w.send("release")
    for w in probers:
        (final,) = await w.finish()
        assert "breaker.store_error" not in [t for t, _ in final["events"]]
    doc = await stored_breaker(path)
    assert (doc["state"], doc["epoch"]) == (CLOSED, 3)
    assert integrity(path) == "ok"


# ---- (b) a crash in the middle of a backoff ------------------------------------------------


async def new_run(store: SQLiteStore, run_id: str) -> None:
    await store.ensure_conversation(
        "c1", tenant="t", agent="a", ttl_seconds=1e6, state="AWAITING_INPUT"
    )
    await store.create_run(
        run_id=run_id,
        conversation_id="c1",
        tenant="t",
        agent="a",
        input={},
        trace_id="t" * 32,
        deadline_at=None,
        busy_policy="enqueue",
        event=EventRecord(
            run_id=run_id,
            seq=1,
            type="run.created",
            name="run.created",
            trace_id="t" * 32,
            span_id="0" * 16,
            parent_span_id=None,
            start=time.time(),
        ),
    )


async def test_a_crash_mid_backoff_resumes_at_the_next_attempt_after_the_remaining_wait(
    tmp_path: Path, workers: list[Worker]
) -> None:
    path = tmp_path / "crash.db"
    async with SQLiteStore(path) as store:
        await new_run(store, "r1")
    # Waits of the worker's policy (no jitter): 0.5 s after attempt 1, 5 s after attempt 2.
    params = {"run_id": "r1", "seq": 3, "resume": False}
    (first,) = await start_all(workers, "retry", path, ["w1"], params)
    await first.send("go")
    async with SQLiteStore(path) as store:
        give_up = time.monotonic() + HANG_GUARD
        while True:
            saved = await store.load_attempt("r1", 3)
            if saved is not None and saved["attempt"] == 2:
                break
            assert time.monotonic() < give_up, "attempt 2 was never journaled"
            await asyncio.sleep(0.01)
    first.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    await first.proc.wait()
    assert first.proc.returncode == -signal.SIGKILL
    assert first.proc.stdout is not None
    before = [json.loads(x) for x in (await first.proc.stdout.read()).decode().splitlines()]

    # The dead process made attempts 1 and 2 and was killed during the 5 s wait.
    assert [x["attempt"] for x in before if "attempt" in x] == [1, 2]
    waits = [x["attrs"] for x in before if x.get("event") == "retry.wait"]
    assert [(w["delay"], w["reason"]) for w in waits] == [(0.5, "backoff"), (5.0, "backoff")]
    assert saved["pipeline"] == "llm"
    assert saved["next_attempt_at"] == pytest.approx(waits[1]["next_attempt_at"])
    assert killed_at < saved["next_attempt_at"]  # mid-backoff, not after it

    # Another worker takes the run over and calls a fresh pipeline on the same step.
    resume = {**params, "resume": True, "dead_owner": "w1"}
    (second,) = await start_all(workers, "retry", path, ["w2"], resume)
    await second.send("go")
    after = await second.finish()
    (resumed,) = [x["attrs"] for x in after if x.get("event") == "retry.wait"]
    assert resumed["reason"] == "resume"
    assert (resumed["attempt"], resumed["next_attempt"]) == (2, 3)
    assert resumed["next_attempt_at"] == pytest.approx(saved["next_attempt_at"])
    assert 0 < resumed["delay"] < 5.0  # only what was left of the wait
    (attempt,) = [x for x in after if "attempt" in x]
    assert attempt["attempt"] == 3  # not 1: the count survived the crash
    assert attempt["at"] >= saved["next_attempt_at"] - 0.05  # and it did wait
    assert after[-1] == {"result": "ok after attempt 3", "epoch": 2}
    assert after[0]["attrs"] == resumed and after[1] == attempt  # waited, then attempted


# ---- (c) StoreBreakerState, StepAttemptJournal, BreakerRegistry ------------------------------


async def test_store_breaker_state_round_trips_and_refuses_a_stale_version(
    sqlite_store: SQLiteStore,
) -> None:
    state = StoreBreakerState(sqlite_store)
    assert await state.load("llm") == (None, 0)
    doc = {"v": 1, "state": "open", "epoch": 1, "probe_at": 1_700_000_030.5, "windows": {}}
    assert await state.save_if("llm", 0, doc) is True
    assert await state.load("llm") == (doc, 1)
    # A second insert, or a save from a version someone else moved past, conflicts.
    assert await state.save_if("llm", 0, {**doc, "epoch": 9}) is False
    assert await state.save_if("llm", 1, {**doc, "state": "half_open", "epoch": 2}) is True
    assert await state.save_if("llm", 1, {**doc, "state": "closed", "epoch": 3}) is False
    assert await state.load("llm") == ({**doc, "state": "half_open", "epoch": 2}, 2)


async def test_breakers_on_two_store_objects_open_once_and_survive_a_reopen(
    db_path: Path,
) -> None:
    clock = FakeClock()
    settings: dict[str, Any] = {
        "minimum_calls": 4,
        "window_size": 10,
        "wait_in_open": 30.0,
        "sync_every": 1,
        "clock": clock,
    }
    async with SQLiteStore(db_path) as one, SQLiteStore(db_path) as two:
        a = CircuitBreaker("llm", store=StoreBreakerState(one), worker_id="a", **settings)
        b = CircuitBreaker("llm", store=StoreBreakerState(two), worker_id="b", **settings)
        recorded = {"a": 0, "b": 0}
        for br in (a, b) * 3:
            try:
                permit = await br.acquire()
            except BreakerOpen:
                continue
            await br.record(permit, "failure")
            recorded[br.worker_id] += 1
        # Neither alone reached minimum_calls: the pair's combined window opened it.
        assert max(recorded.values()) < settings["minimum_calls"]
        for br in (a, b, a):  # each publishes; the second sees both windows; a adopts
            await br.sync()
        assert a.state == OPEN and b.state == OPEN
        assert a.epoch == b.epoch == 1
        doc, version = await one.breaker_load("llm")
        assert doc is not None and (doc["state"], doc["epoch"]) == (OPEN, 1)
        assert doc["probe_at"] == clock.now() + 30.0
    async with SQLiteStore(db_path) as again:
        c = CircuitBreaker("llm", store=StoreBreakerState(again), worker_id="c", **settings)
        with pytest.raises(BreakerOpen) as info:
            await c.acquire()
        assert info.value.breaker == "llm" and info.value.probe_at == clock.now() + 30.0
        assert (await again.breaker_load("llm"))[1] == version  # reading wrote nothing


async def running(store: SQLiteStore, run_id: str = "r1") -> Lease:
    await new_run(store, run_id)
    lease = await store.claim(run_id, owner="w1", expected_epoch=0, lease_seconds=60, now=0.0)
    assert lease is not None
    return lease


async def test_step_attempt_journal_round_trips_per_step_and_pipeline(
    sqlite_store: SQLiteStore,
) -> None:
    lease = await running(sqlite_store)
    journal = StepAttemptJournal(sqlite_store, lease, "r1", 4, pipeline="openai:gpt-4o")
    assert await journal.load() is None
    state = AttemptState(attempt=2, next_attempt_at=1_700_000_005.25, first_attempt_at=1.7e9)
    await journal.save(state)
    assert await journal.load() == state
    assert await sqlite_store.load_attempt("r1", 4) == {
        **state.to_json(),
        "pipeline": "openai:gpt-4o",
    }
    # Another step, or another dependency's call in the same step, does not resume it.
    assert await StepAttemptJournal(sqlite_store, lease, "r1", 5).load() is None
    other = StepAttemptJournal(sqlite_store, lease, "r1", 4, pipeline="anthropic:claude")
    assert await other.load() is None
    # Garbage in the row is ignored (attempt 1 again), never a crash of the step.
    await sqlite_store.save_attempt(lease, 6, {"attempt": "many", "pipeline": None})
    assert await StepAttemptJournal(sqlite_store, lease, "r1", 6).load() is None
    with pytest.raises(ValueError, match="not the lease's run"):
        StepAttemptJournal(sqlite_store, lease, "r2", 4)


class Crash(BaseException):
    """Stands for the process dying: nothing below catches it."""


class CrashAfterSave(StepAttemptJournal):
    async def save(self, state: AttemptState) -> None:
        await super().save(state)
        if state.attempt == 2:
            raise Crash


async def test_a_resumed_pipeline_continues_from_the_journal_in_the_store(
    sqlite_store: SQLiteStore,
) -> None:
    lease = await running(sqlite_store)
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, multiplier=4.0, jitter=False)
    calls: list[int] = []

    async def flaky(attempt: Attempt) -> str:
        calls.append(attempt.number)
        if attempt.number < 4:
            raise ProviderUnavailable("overloaded", status_code=529)
        return f"ok at {attempt.number}"

    first = ResiliencePipeline("llm", retry=policy, clock=clock)
    with pytest.raises(Crash):
        await first.call(flaky, journal=CrashAfterSave(sqlite_store, lease, "r1", 2))
    assert calls == [1, 2]
    clock.advance(1.5)  # of the 4 s wait after attempt 2, 2.5 s are left
    taken = await sqlite_store.claim("r1", owner="w2", expected_epoch=1, lease_seconds=60, now=61)
    assert taken is not None
    events: Events = []
    second = ResiliencePipeline(
        "llm", retry=policy, clock=clock, on_event=lambda t, a: events.append((t, a))
    )
    assert await second.call(flaky, journal=StepAttemptJournal(sqlite_store, taken, "r1", 2)) == (
        "ok at 4"
    )
    assert calls == [1, 2, 3, 4]
    waits = [(a["reason"], a["delay"]) for t, a in events if t == "retry.wait"]
    assert waits == [("resume", pytest.approx(2.5)), ("backoff", 16.0)]
    # The dead owner's lease can no longer write the step's attempts.
    with pytest.raises(LeaseLost):
        await StepAttemptJournal(sqlite_store, lease, "r1", 2).save(AttemptState(9, None, 0.0))
    saved = await sqlite_store.load_attempt("r1", 2)
    assert saved is not None and saved["attempt"] == 3


async def test_a_worker_that_lost_its_lease_stops_retrying(sqlite_store: SQLiteStore) -> None:
    lease = await running(sqlite_store)
    taken = await sqlite_store.claim("r1", owner="w2", expected_epoch=1, lease_seconds=60, now=61)
    assert taken is not None
    calls = 0

    async def failing(attempt: Attempt) -> str:
        nonlocal calls
        calls += 1
        raise ProviderUnavailable("overloaded", status_code=503)

    pipe = ResiliencePipeline("llm", retry=RetryPolicy(base_delay=0.0), clock=FakeClock())
    with pytest.raises(LeaseLost):
        await pipe.call(failing, journal=StepAttemptJournal(sqlite_store, lease, "r1", 1))
    assert calls == 1
    assert await sqlite_store.load_attempt("r1", 1) is None


async def test_registry_gives_one_breaker_and_one_budget_per_dependency() -> None:
    registry = BreakerRegistry(
        InMemoryBreakerStore(),
        {"minimum_calls": 3, "wait_in_open": 10.0},
        overrides={"tool:search": {"minimum_calls": 7}},
        budget_defaults={"percent": 0.0, "min_retries_per_sec": 0.1, "ttl": 10.0},
        clock=FakeClock(),
    )
    llm = registry.get("llm")
    assert registry.get("llm") is llm and registry.breaker("llm") is llm
    assert registry.get("tool:search") is not llm
    assert (llm.minimum_calls, llm.wait_in_open) == (3, 10.0)
    assert (
        registry.get("tool:search").minimum_calls,
        registry.get("tool:search").wait_in_open,
    ) == (
        7,
        10.0,
    )
    one, two = registry.pipeline("llm"), registry.pipeline("llm")
    assert one is not two
    assert one.breaker is llm and two.breaker is llm
    assert one.budget is two.budget is registry.budget("llm")
    assert registry.budget("tool:search") is not registry.budget("llm")
    # The budget is one: a retry taken through one pipeline is gone for the other.
    assert one.budget is not None and one.budget.try_withdraw() is True
    assert two.budget is not None and two.budget.try_withdraw() is False
    assert registry.pipeline("llm", breaker=False, budget=False).breaker is None
    assert set(registry.breakers()) == {"llm", "tool:search"}
    with pytest.raises(TypeError, match="minimum_cals"):
        BreakerRegistry(None, {"minimum_cals": 3})
    with pytest.raises(TypeError, match="store"):
        BreakerRegistry(None, overrides={"llm": {"store": None}})
    with pytest.raises(TypeError, match="percentage"):
        BreakerRegistry(None, budget_defaults={"percentage": 0.2})


async def test_registry_sends_breaker_events_to_the_process_and_to_the_calling_run(
    sqlite_store: SQLiteStore,
) -> None:
    clock = FakeClock()
    process: Events = []
    run_a: Events = []
    run_b: Events = []
    registry = BreakerRegistry(
        sqlite_store,
        {"minimum_calls": 2, "wait_in_open": 30.0},
        lambda t, a: process.append((t, a)),
        clock=clock,
    )
    # Run A's pipeline creates the shared breaker first; run B's call then opens it.
    pipe_a = registry.pipeline("llm", retry=None, on_event=lambda t, a: run_a.append((t, a)))
    pipe_b = registry.pipeline("llm", retry=None, on_event=lambda t, a: run_b.append((t, a)))

    async def broken(attempt: Attempt) -> str:
        raise ProviderUnavailable("down", status_code=503)

    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await pipe_b.call(broken)
    assert registry.get("llm").state == OPEN
    assert [t for t, _ in run_a] == []  # not A's business
    assert ("breaker.transition", OPEN) in [(t, a.get("to")) for t, a in run_b]
    assert ("breaker.transition", OPEN) in [(t, a.get("to")) for t, a in process]
    with pytest.raises(BreakerOpen):
        await pipe_a.call(broken)
    assert "breaker.rejected" in [t for t, _ in run_a]
    assert "breaker.rejected" not in [t for t, _ in run_b]
    assert [t for t, _ in process].count("breaker.rejected") == 1
    # The breaker lives in the store: another process's registry would see it open.
    doc, _ = await sqlite_store.breaker_load("llm")
    assert doc is not None and doc["state"] == OPEN


async def test_upgrading_a_version_1_store_adds_the_attempts_table(db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    for statement in SQLITE_MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
    conn.execute(
        "INSERT INTO breakers (name, state, version, updated_at) VALUES ('llm', '{}', 3, 0)"
    )
    conn.close()
    async with SQLiteStore(db_path) as store:
        assert await store.schema_version() == len(SQLITE_MIGRATIONS) >= 2
        assert await store.breaker_load("llm") == ({}, 3)
        lease = await running(store)
        await store.save_attempt(lease, 1, {"attempt": 1})
        assert await store.load_attempt("r1", 1) == {"attempt": 1}


# ---- (d) orchestrion breakers --------------------------------------------------------------


def test_breaker_summary_of_each_state() -> None:
    now = 1_700_000_000.0

    def entry(epoch: int, buckets: dict[str, list[int]], horizon: float = 60.0) -> Any:
        return {"epoch": epoch, "at": now, "width": 6.0, "horizon": horizon, "buckets": buckets}

    b = int(now // 6)  # the bucket of `now`
    closed = {
        "state": "closed",
        "epoch": 4,
        "changed_at": now - 100,
        "outcomes": {
            "a": entry(4, {str(b): [6, 1, 1], str(b - 3): [2, 1, 0]}),
            # A worker that exited half a minute ago: its outcomes still count.
            "gone": entry(4, {str(b - 5): [2, 1, 0], str(b - 20): [9, 9, 9]}),
            "old": entry(3, {str(b): [50, 50, 0]}),  # another epoch
            "aged": entry(4, {str(b - 11): [7, 7, 0]}),  # all older than its horizon
            "bad": {"epoch": 4, "width": "wide", "buckets": {str(b): [1, 1, 1]}},
        },
    }
    row = breaker_summary("llm", closed, 9, now=now)
    assert (row["state"], row["calls"], row["workers"], row["version"]) == ("closed", 10, 2, 9)
    assert row["failure_rate"] == pytest.approx(0.3)
    assert row["slow_call_rate"] == pytest.approx(0.1)
    assert row["probe_at"] is None and row["probe_in"] is None
    opened = {
        "state": "open",
        "epoch": 5,
        "probe_at": now + 12.5,
        "rate": {"failure_rate": 0.8, "slow_call_rate": 0.0, "calls": 25},
    }
    row = breaker_summary("llm", opened, 10, now=now)
    assert (row["state"], row["calls"], row["failure_rate"]) == ("open", 25, 0.8)
    assert (row["probe_at"], row["probe_in"]) == (now + 12.5, 12.5)
    assert breaker_summary("llm", {**opened, "probe_at": now - 5}, 10, now=now)["probe_in"] == 0
    half = {
        "state": "half_open",
        "epoch": 6,
        "rate": opened["rate"],
        "probes": {"claims": {"w:1": now + 60, "w:2": now - 1}, "successes": 1},
    }
    row = breaker_summary("llm", half, 11, now=now)
    assert (row["probes_in_flight"], row["probe_successes"], row["probe_at"]) == (1, 1, None)
    # A row written by something else is shown, not a crash.
    assert breaker_summary("x", {"state": 7}, 1, now=now)["state"] == "unknown"


async def test_breakers_command_lists_what_the_store_holds(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        settings: dict[str, Any] = {"minimum_calls": 4, "wait_in_open": 45.0, "sync_every": 1}
        llm = CircuitBreaker("openai:gpt-4o", store=StoreBreakerState(store), **settings)
        for _ in range(4):
            with pytest.raises(ProviderUnavailable):
                await llm.call(_fail)
        assert llm.state == OPEN
        tool = CircuitBreaker("tool:search", store=StoreBreakerState(store), **settings)
        for fn in (_ok, _ok, _fail):
            try:
                await tool.call(fn)
            except ProviderUnavailable:
                pass
        await tool.sync()
        assert tool.state == CLOSED
    obj = SimpleNamespace(store=f"sqlite:///{db_path}", durability="normal")

    result = await asyncio.to_thread(CliRunner().invoke, breakers, ["--json"], obj=obj)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["name"] for r in rows] == ["openai:gpt-4o", "tool:search"]
    opened, closed = rows
    assert (opened["state"], opened["failure_rate"], opened["calls"]) == (OPEN, 1.0, 4)
    assert 0 < opened["probe_in"] <= 45.0
    assert opened["probe_at"] == pytest.approx(opened["changed_at"] + 45.0)
    assert (closed["state"], closed["calls"], closed["workers"]) == (CLOSED, 3, 1)
    assert closed["failure_rate"] == pytest.approx(1 / 3)
    assert closed["probe_at"] is None

    result = await asyncio.to_thread(CliRunner().invoke, breakers, [], obj=obj)
    assert result.exit_code == 0, result.output
    header, first, second = result.output.splitlines()
    assert header.split() == ["BREAKER", "STATE", "FAILURES", "CALLS", "NEXT", "PROBE"]
    assert first.split()[:4] == ["openai:gpt-4o", "open", "100%", "4"]
    assert "(in " in first
    assert second.split() == ["tool:search", "closed", "33%", "3", "-"]


async def _ok() -> str:
    return "ok"


async def _fail() -> str:
    raise ProviderUnavailable("down", status_code=503)


def test_breakers_command_on_an_empty_or_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here.db"
    obj = SimpleNamespace(store=f"sqlite:///{missing}", durability="normal")
    result = CliRunner().invoke(breakers, [], obj=obj)
    assert result.exit_code == 0 and "no store at" in result.output
    assert not missing.exists()  # listing never creates a store
    assert CliRunner().invoke(breakers, ["--json"], obj=obj).output == ""

    empty = tmp_path / "empty.db"

    async def create() -> None:
        async with SQLiteStore(empty):
            pass

    asyncio.run(create())
    obj = SimpleNamespace(store=f"sqlite:///{empty}", durability="normal")
    result = CliRunner().invoke(breakers, [], obj=obj)
    assert result.exit_code == 0 and "no breakers recorded yet" in result.output
    assert CliRunner().invoke(breakers, ["--json"], obj=obj).output == ""

    bad = SimpleNamespace(store="mysql://nope", durability="normal")
    result = CliRunner().invoke(breakers, [], obj=bad)
    assert result.exit_code == 1 and "unknown store URL" in result.output
