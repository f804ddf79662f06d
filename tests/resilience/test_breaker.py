import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from orchestrion.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerOpen,
    CircuitBreaker,
    FakeClock,
    InMemoryBreakerStore,
)

Events = list[tuple[str, dict[str, Any]]]


def make(clock: FakeClock, events: Events | None = None, **kw: Any) -> CircuitBreaker:
    defaults: dict[str, Any] = {
        "window_size": 10,
        "minimum_calls": 5,
        "failure_rate_threshold": 0.5,
        "wait_in_open": 30.0,
        "half_open_probes": 2,
    }
    defaults.update(kw)
    sink = None if events is None else (lambda t, a: events.append((t, a)))
    return CircuitBreaker("llm", clock=clock, on_event=sink, **defaults)


async def outcome(br: CircuitBreaker, ok: bool, duration: float = 0.01) -> None:
    permit = await br.acquire()
    await br.record(permit, "success" if ok else "failure", duration)


async def test_count_window_opens_at_failure_rate_after_min_calls() -> None:
    clock = FakeClock()
    events: Events = []
    br = make(clock, events)
    for _ in range(4):
        await outcome(br, False)
    assert br.state == CLOSED  # 100% failures but only 4 < minimum_calls calls
    await outcome(br, False)
    assert br.state == OPEN
    ((_, attrs),) = [e for e in events if e[0] == "breaker.transition"]
    assert attrs["from"] == CLOSED and attrs["to"] == OPEN
    assert attrs["breaker"] == "llm"
    assert attrs["failure_rate"] == 1.0 and attrs["calls"] == 5
    assert attrs["probe_at"] == clock.now() + 30
    assert attrs["source"] == "local"


async def test_below_threshold_stays_closed_and_window_slides() -> None:
    clock = FakeClock()
    br = make(clock)
    for ok in [True, False] * 2 + [True] * 6:
        await outcome(br, ok)
    assert br.state == CLOSED
    assert br.metrics()["failure_rate"] == pytest.approx(0.2)
    # 4 failures among the last 10: the two early failures slid out of the window.
    for ok in [False, True, False, True]:
        await outcome(br, ok)
    assert br.metrics()["calls"] == 10
    assert br.metrics()["failure_rate"] == pytest.approx(0.2)
    for _ in range(3):
        await outcome(br, False)
    assert br.state == OPEN  # 5/10


async def test_open_rejects_with_name_and_probe_time() -> None:
    clock = FakeClock()
    events: Events = []
    br = make(clock, events)
    for _ in range(5):
        await outcome(br, False)
    clock.advance(10)
    with pytest.raises(BreakerOpen) as info:
        await br.acquire()
    err = info.value
    assert err.breaker == "llm"
    assert err.probe_at == br.probe_at
    assert "llm" in str(err) and "in 20.0s" in str(err) and "100%" in str(err)
    rejected = [a for t, a in events if t == "breaker.rejected"]
    assert rejected[-1]["retry_in"] == pytest.approx(20)


async def test_half_open_limits_probes_and_closes_after_successes() -> None:
    clock = FakeClock()
    events: Events = []
    br = make(clock, events)
    for _ in range(5):
        await outcome(br, False)
    clock.advance(30)
    p1 = await br.acquire()
    assert br.state == HALF_OPEN and p1.probe is not None
    p2 = await br.acquire()
    with pytest.raises(BreakerOpen) as info:
        await br.acquire()  # only 2 probes at a time
    assert info.value.state == HALF_OPEN and info.value.probe_at is None
    await br.record(p1, "success")
    assert br.state == HALF_OPEN
    with pytest.raises(BreakerOpen):
        await br.acquire()  # 1 success + 1 in flight = the limit
    await br.record(p2, "success")
    assert br.state == CLOSED
    assert br.metrics()["calls"] == 0  # a fresh window after closing
    moves = [(a["from"], a["to"]) for t, a in events if t == "breaker.transition"]
    assert moves == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_probe_failure_reopens_for_another_wait() -> None:
    clock = FakeClock()
    br = make(clock)
    for _ in range(5):
        await outcome(br, False)
    clock.advance(30)
    probe = await br.acquire()
    await br.record(probe, "failure")
    assert br.state == OPEN
    assert br.probe_at == clock.now() + 30
    with pytest.raises(BreakerOpen):
        await br.acquire()


async def test_ignored_probe_frees_its_slot() -> None:
    clock = FakeClock()
    br = make(clock, half_open_probes=1)
    for _ in range(5):
        await outcome(br, False)
    clock.advance(30)
    probe = await br.acquire()
    with pytest.raises(BreakerOpen):
        await br.acquire()
    await br.record(probe, "ignored")
    assert br.state == HALF_OPEN
    again = await br.acquire()
    await br.record(again, "success")
    assert br.state == CLOSED


async def test_slow_calls_open_the_breaker() -> None:
    clock = FakeClock()
    br = make(clock, slow_call_duration=5.0, slow_call_rate_threshold=0.6)
    for d in [10, 10, 1, 10]:
        await outcome(br, True, duration=d)
    assert br.state == CLOSED  # 3 slow of 4: below minimum_calls
    await outcome(br, True, duration=1)
    # 3/5 = 60%, but thresholds are evaluated when a failure or slow call is recorded.
    assert br.state == CLOSED
    await outcome(br, True, duration=10)
    assert br.state == OPEN  # 4 slow of 6, all of them successes


async def test_time_window_forgets_old_failures() -> None:
    clock = FakeClock()
    br = make(clock, window="time", window_seconds=10.0)
    for _ in range(4):
        await outcome(br, False)
    clock.advance(11)  # those 4 failures leave the window
    for _ in range(4):
        await outcome(br, True)
    await outcome(br, False)
    assert br.state == CLOSED  # 1/5 inside the window
    assert br.metrics()["calls"] == 5
    for _ in range(2):
        await outcome(br, False)
    assert br.state == CLOSED  # 3/7
    await outcome(br, False)
    assert br.state == OPEN  # 4/8 = 50%


async def test_late_outcome_of_an_older_epoch_is_ignored() -> None:
    clock = FakeClock()
    br = make(clock)
    early = await br.acquire()
    for _ in range(5):
        await outcome(br, False)
    clock.advance(30)
    p1 = await br.acquire()
    p2 = await br.acquire()
    await br.record(early, "failure")  # admitted while closed; the breaker moved on
    assert br.state == HALF_OPEN
    await br.record(p1, "success")
    await br.record(p2, "success")
    assert br.state == CLOSED


async def test_call_helper_counts_exceptions() -> None:
    clock = FakeClock()
    br = make(clock)

    async def boom() -> int:
        raise RuntimeError("down")

    async def fine() -> int:
        return 1

    assert await br.call(fine) == 1
    for _ in range(4):
        with pytest.raises(RuntimeError):
            await br.call(boom)
    assert br.state == OPEN  # 4 failures out of 5 calls
    with pytest.raises(BreakerOpen):
        await br.call(fine)


async def test_invalid_config() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_rate_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", minimum_calls=0)


# ---- shared state ----------------------------------------------------------------------


def shared(clock: FakeClock, store: InMemoryBreakerStore, worker: str, **kw: Any) -> CircuitBreaker:
    settings: dict[str, Any] = {"sync_interval": 1.0, "sync_every": 1000, **kw}
    return make(clock, store=store, worker_id=worker, **settings)


async def until(condition: Callable[[], bool]) -> None:
    """Let background tasks run until `condition` holds (a hang guard, not a timing)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the background sync never happened")


def published(store: InMemoryBreakerStore, worker: str) -> tuple[int, int, int]:
    doc = store.peek("llm")
    assert doc is not None
    counts = doc["outcomes"][worker]["buckets"].values()
    return (sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts))


async def test_closed_breaker_does_not_hit_the_store_per_call() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    br = shared(clock, store, "a", window_size=1000, minimum_calls=1000)
    for _ in range(200):
        await outcome(br, True)  # no time passes: one load on the first call only
    assert (store.loads, store.saves) == (1, 0)  # nothing to publish then
    clock.advance(1.0)
    await outcome(br, True)  # admitted at once; the sync that is due runs in the background
    await until(lambda: store.saves == 1)
    assert store.loads == 2
    assert published(store, "a") == (201, 0, 0)  # the window, as time buckets
    await br.close()  # nothing new since: no store traffic
    assert (store.loads, store.saves) == (2, 1)


async def test_failures_are_published_early_after_sync_every_of_them() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    br = shared(
        clock, store, "a", sync_every=3, sync_interval=3600, window_size=100, minimum_calls=99
    )
    for _ in range(10):
        await outcome(br, True)
    for _ in range(2):
        await outcome(br, False)
    await asyncio.sleep(0.01)
    assert store.saves == 0  # successes and 2 failures wait for the (hour-long) interval
    await outcome(br, False)
    await until(lambda: store.saves == 1)
    assert published(store, "a") == (13, 3, 0)


async def test_close_publishes_what_is_left_once() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    br = shared(clock, store, "a", sync_interval=3600)
    for ok in (True, False, True):
        await outcome(br, ok)
    assert store.saves == 0
    await br.close()
    assert store.saves == 1 and published(store, "a") == (3, 1, 0)
    await br.close()
    assert store.saves == 1  # idempotent
    await outcome(br, False)  # still usable after close
    await br.close()
    assert store.saves == 2 and published(store, "a") == (4, 2, 0)


async def test_state_is_shared_between_workers_and_survives_restart() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    events_b: Events = []
    a = shared(clock, store, "a")
    b = make(clock, events_b, store=store, worker_id="b", sync_interval=1.0, sync_every=1000)
    await outcome(b, True)  # b synced while all was well
    for _ in range(5):
        await outcome(a, False)
    assert a.state == OPEN
    assert store.peek("llm")["state"] == OPEN  # type: ignore[index]
    # b learns it in the background once its view is due, and then fails fast.
    await outcome(b, True)
    assert b.state == CLOSED  # still inside its staleness bound
    clock.advance(1.0)
    await outcome(b, True)  # admitted on a view younger than 2 x sync_interval
    await until(lambda: b.state == OPEN)
    with pytest.raises(BreakerOpen):
        await b.acquire()
    (move,) = [x for t, x in events_b if t == "breaker.transition"]
    assert move["to"] == OPEN and move["source"] == "store"
    # A restarted worker starts open too.
    c = shared(clock, store, "c")
    with pytest.raises(BreakerOpen):
        await c.acquire()


async def test_fleet_wide_failure_rate_combines_workers() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    a = shared(clock, store, "a", minimum_calls=6)
    b = shared(clock, store, "b", minimum_calls=6)
    for _ in range(3):
        await outcome(a, False)
    clock.advance(1.0)
    await a.sync()  # a publishes 3 calls / 3 failures
    for _ in range(2):
        await outcome(b, False)
    assert b.state == CLOSED
    await outcome(b, False)  # b: 3 local + 3 from a = 6 calls, all failed
    assert b.state == OPEN
    assert store.peek("llm")["rate"]["calls"] == 6  # type: ignore[index]


async def test_only_half_open_probes_limit_is_fleet_wide() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    a = shared(clock, store, "a")
    b = shared(clock, store, "b")
    for _ in range(5):
        await outcome(a, False)
    clock.advance(30)
    pa = await a.acquire()
    pb = await b.acquire()
    assert pa.probe and pb.probe
    with pytest.raises(BreakerOpen):
        await a.acquire()
    with pytest.raises(BreakerOpen):
        await b.acquire()
    await a.record(pa, "success")
    await b.record(pb, "success")
    assert store.peek("llm")["state"] == CLOSED  # type: ignore[index]
    clock.advance(1.0)
    await outcome(a, True)
    assert a.state == CLOSED


async def test_expired_probe_claim_is_reclaimed() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    a = shared(clock, store, "a", half_open_probes=1, probe_timeout=60)
    for _ in range(5):
        await outcome(a, False)
    clock.advance(30)
    await a.acquire()  # this probe's worker "dies" without recording
    b = shared(clock, store, "b", half_open_probes=1, probe_timeout=60)
    with pytest.raises(BreakerOpen):
        await b.acquire()
    clock.advance(61)
    probe = await b.acquire()
    await b.record(probe, "success")
    assert b.state == CLOSED


class ConflictingStore(InMemoryBreakerStore):
    """Lets another writer sneak in between a load and the next save."""

    def __init__(self) -> None:
        super().__init__()
        self.intruder: Any = None

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        if self.intruder is not None:
            intruder, self.intruder = self.intruder, None
            await intruder()
        return await super().save_if(name, version, state)


async def test_cas_conflict_adopts_the_other_writers_transition() -> None:
    clock = FakeClock()
    store = ConflictingStore()
    events: Events = []
    a = make(clock, events, store=store, worker_id="a", sync_interval=1.0, sync_every=1000)
    b = shared(clock, store, "b")
    await outcome(a, True)
    await outcome(b, True)
    for _ in range(3):
        await outcome(a, False)

    async def b_opens() -> None:
        while b.state != OPEN:
            await outcome(b, False)

    store.intruder = b_opens
    await outcome(a, False)  # a decides to open, but b opened first
    assert a.state == OPEN and b.state == OPEN
    doc = store.peek("llm")
    assert doc is not None and doc["epoch"] == 1  # one transition, not two
    (move,) = [x for t, x in events if t == "breaker.transition"]
    assert move["source"] == "store"
    assert store.conflicts >= 1


class BrokenStore(InMemoryBreakerStore):
    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        raise OSError("database is locked")


async def test_store_outage_still_protects_this_process() -> None:
    clock = FakeClock()
    events: Events = []
    br = make(clock, events, store=BrokenStore(), worker_id="a")
    for _ in range(5):
        await outcome(br, False)
    assert br.state == OPEN
    with pytest.raises(BreakerOpen):
        await br.acquire()
    assert any(t == "breaker.store_error" for t, _ in events)


async def test_store_behind_is_overwritten_by_newer_epoch() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    br = shared(clock, store, "a")
    for _ in range(5):
        await outcome(br, False)
    assert store.peek("llm")["epoch"] == 1  # type: ignore[index]
    store._rows.clear()  # the row was lost (restored backup)
    clock.advance(1.0)
    await br.sync()
    assert store.peek("llm")["state"] == OPEN  # type: ignore[index]


async def test_outcomes_of_an_exited_worker_count_until_they_age_out() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    gone = shared(clock, store, "gone", minimum_calls=6)  # peer_ttl: window_seconds, 60 s
    for _ in range(3):
        await outcome(gone, False)
    await gone.close()  # published on its way out; then the process is gone for good
    del gone
    clock.advance(30)  # long after any liveness timeout, still inside the window
    b = shared(clock, store, "b", minimum_calls=6)
    for _ in range(2):
        await outcome(b, False)
    assert b.state == CLOSED
    await outcome(b, False)  # 3 of its own + 3 that happened 30 s ago
    assert b.state == OPEN
    assert store.peek("llm")["rate"]["calls"] == 6  # type: ignore[index]


async def test_outcomes_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    old = shared(clock, store, "old", minimum_calls=6, peer_ttl=20.0)
    for _ in range(3):
        await outcome(old, False)
    await old.close()
    clock.advance(25)  # those 3 failures happened more than peer_ttl ago
    b = shared(clock, store, "b", minimum_calls=6, peer_ttl=20.0)
    for _ in range(4):
        await outcome(b, False)
    assert b.state == CLOSED  # 4 calls in the window, below minimum_calls
    await b.close()
    doc = store.peek("llm")
    assert doc is not None and set(doc["outcomes"]) == {"b"}  # the aged entry was pruned


async def test_a_call_in_flight_when_the_breaker_opens_joins_the_window_that_opened_it() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    a = shared(clock, store, "a", minimum_calls=4)
    b = shared(clock, store, "b", minimum_calls=4)
    await outcome(b, True)  # b has loaded the shared state (this success is unpublished)
    in_flight = await b.acquire()
    unpublished = await b.acquire()
    await b.record(unpublished, "failure")  # recorded, not published yet
    for _ in range(4):
        await outcome(a, False)
    assert a.state == OPEN and store.peek("llm")["rate"]["calls"] == 4  # type: ignore[index]
    clock.advance(2.0)
    with pytest.raises(BreakerOpen):
        await b.acquire()  # b learns of it: its unpublished failure is late
    await b.record(in_flight, "failure")  # and so is the call that was in flight
    await b.close()
    rate = store.peek("llm")["rate"]  # type: ignore[index]
    assert (rate["calls"], rate["late"]) == (7, 3)  # a's 4, b's success and 2 failures
    assert rate["failure_rate"] == pytest.approx(6 / 7)
    assert store.peek("llm")["epoch"] == 1  # type: ignore[index]


async def test_malformed_published_outcomes_are_ignored_and_pruned() -> None:
    clock = FakeClock()
    store = InMemoryBreakerStore()
    idx = int(clock.now() // 6.0)
    garbage: dict[str, Any] = {
        "a": "nonsense",
        "b": {"epoch": 0, "width": "wide", "buckets": {str(idx): [5, 5, 0]}},
        "c": {"epoch": 0, "width": 6.0, "buckets": {"x": [1, 1, 0], str(idx): [-3, 1, 0]}},
        "d": {"epoch": 0, "width": 6.0, "buckets": {str(idx): [2, 2]}},
        "ok": {"epoch": 0, "width": 6.0, "horizon": 60.0, "buckets": {str(idx): [3, 3, 0]}},
        "v1": {"epoch": 0, "at": clock.now(), "calls": 50, "failures": 50, "slow": 0},
    }
    doc = {"v": 1, "state": CLOSED, "epoch": 0, "outcomes": garbage, "windows": {}}
    assert await store.save_if("llm", 0, doc)
    br = shared(clock, store, "me", minimum_calls=6)
    for _ in range(2):
        await outcome(br, False)
    assert br.state == CLOSED and br.metrics()["calls"] == 5  # 2 of mine + 3 of "ok"
    await outcome(br, False)
    assert br.state == OPEN  # 6 calls, all failed
    await br.close()
    stored = store.peek("llm")
    assert stored is not None and stored["outcomes"] == {} and "windows" not in stored
