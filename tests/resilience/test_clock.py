import asyncio

import pytest

from orchestrion.resilience import FakeClock, SystemClock


async def test_fake_sleep_advances_time_instantly() -> None:
    clock = FakeClock(start=1000.0)
    await clock.sleep(30)
    assert clock.monotonic() == 30
    assert clock.now() == 1030.0
    assert clock.sleeps == [30]


async def test_concurrent_sleepers_wake_in_time_order() -> None:
    clock = FakeClock()
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, d: float) -> None:
        await clock.sleep(d)
        order.append((name, clock.monotonic()))

    await asyncio.gather(sleeper("slow", 5), sleeper("fast", 1), sleeper("mid", 3))
    assert order == [("fast", 1), ("mid", 3), ("slow", 5)]


async def test_cancelled_sleeper_does_not_move_time() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(100))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.sleep(1)
    assert clock.monotonic() == 1


async def test_manual_advance_wakes_due_sleepers() -> None:
    clock = FakeClock(settle=10_000)  # the driver waits long enough for advance() to win
    task = asyncio.create_task(clock.sleep(5))
    await asyncio.sleep(0)
    clock.advance(5)
    await asyncio.sleep(0)
    assert task.done()


async def test_system_clock_sleeps_a_little() -> None:
    clock = SystemClock()
    t0 = clock.monotonic()
    await clock.sleep(0.001)
    assert clock.monotonic() > t0
    assert abs(clock.now() - __import__("time").time()) < 5
