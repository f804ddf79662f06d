import asyncio
from typing import Any

import pytest

from orchestrion.resilience import FakeClock, HedgePolicy, hedged

Events = list[tuple[str, dict[str, Any]]]


async def test_fast_primary_fires_no_hedge() -> None:
    clock = FakeClock()
    started: list[int] = []

    async def fn(k: int) -> str:
        started.append(k)
        await clock.sleep(1)
        return "primary"

    assert await hedged(fn, HedgePolicy(delay=2), clock=clock) == "primary"
    assert started == [0]


async def test_hedge_wins_and_loser_is_cancelled() -> None:
    clock = FakeClock()
    events: Events = []
    cancelled: list[int] = []

    async def fn(k: int) -> str:
        try:
            await clock.sleep(10 if k == 0 else 1)  # the primary is stuck
            return f"attempt {k}"
        except asyncio.CancelledError:
            cancelled.append(k)
            raise

    result = await hedged(
        fn,
        HedgePolicy(delay=2),
        clock=clock,
        name="llm",
        on_event=lambda t, a: events.append((t, a)),
    )
    assert result == "attempt 1"
    assert cancelled == [0]  # the loser was cancelled before hedged() returned
    assert clock.monotonic() == 3
    assert [t for t, _ in events] == ["hedge.fired", "hedge.won"]
    assert events[0][1] == {"pipeline": "llm", "attempt": 1, "hedge": 1, "delay": 2}
    assert events[1][1]["winner"] == 1 and events[1][1]["cancelled"] == 1


async def test_failure_before_the_hedge_fails_at_once() -> None:
    clock = FakeClock()

    async def fn(k: int) -> str:
        await clock.sleep(1)
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        await hedged(fn, HedgePolicy(delay=2), clock=clock)
    assert clock.monotonic() == 1


async def test_primary_failing_after_the_hedge_fired_waits_for_the_hedge() -> None:
    clock = FakeClock()

    async def fn(k: int) -> str:
        if k == 0:
            await clock.sleep(3)
            raise ConnectionError("late failure")
        await clock.sleep(5)
        return "hedge"

    assert await hedged(fn, HedgePolicy(delay=2), clock=clock) == "hedge"
    assert clock.monotonic() == 7


async def test_all_fail_raises_the_last() -> None:
    clock = FakeClock()

    async def fn(k: int) -> str:
        await clock.sleep(3 if k == 0 else 5)
        raise ValueError(f"fail {k}")

    with pytest.raises(ValueError, match="fail 1"):
        await hedged(fn, HedgePolicy(delay=2), clock=clock)


async def test_veto_skips_the_hedge() -> None:
    clock = FakeClock()
    events: Events = []
    started: list[int] = []

    async def fn(k: int) -> str:
        started.append(k)
        await clock.sleep(10)
        return "slow primary"

    result = await hedged(
        fn,
        HedgePolicy(delay=2, max_hedges=2),
        clock=clock,
        may_fire=lambda: False,
        on_event=lambda t, a: events.append((t, a)),
    )
    assert result == "slow primary" and started == [0]
    assert [t for t, _ in events] == ["hedge.skipped"]


async def test_cancelling_the_caller_cancels_every_copy() -> None:
    clock = FakeClock()
    cancelled: list[int] = []

    async def fn(k: int) -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(k)
            raise
        return "never"  # pragma: no cover

    async def caller() -> str:
        return await hedged(fn, HedgePolicy(delay=1, max_hedges=2), clock=clock)

    task = asyncio.create_task(caller())
    await clock.sleep(2.5)  # both hedges have fired by now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == [0, 1, 2]
