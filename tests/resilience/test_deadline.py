import asyncio

import pytest

from orchestrion.errors import DeadlineExceeded
from orchestrion.resilience import (
    FakeClock,
    StepTimeout,
    check_deadline,
    current_deadline,
    deadline,
    remaining,
    timeout,
)


async def test_no_deadline_by_default() -> None:
    assert current_deadline() is None
    assert remaining() is None
    check_deadline()
    async with timeout(None):
        assert current_deadline() is None


async def test_deadline_propagates_and_nests_as_minimum() -> None:
    clock = FakeClock()
    t0 = clock.now()
    async with deadline(60, clock=clock):
        assert current_deadline() == t0 + 60
        async with timeout(10, clock=clock, name="step"):
            assert current_deadline() == t0 + 10
            assert remaining(clock) == 10
        async with timeout(100, clock=clock):  # looser than the turn: the turn still rules
            assert current_deadline() == t0 + 60
        assert current_deadline() == t0 + 60
    assert current_deadline() is None


async def test_child_tasks_inherit_the_deadline() -> None:
    clock = FakeClock()
    async with deadline(5, clock=clock):
        seen = await asyncio.create_task(asyncio.sleep(0, result=current_deadline()))
    assert seen == clock.now() - clock.monotonic() + 5


async def test_deadline_cancels_in_flight_work_and_raises() -> None:
    clock = FakeClock()
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(DeadlineExceeded, match="turn"):
        async with deadline(5, clock=clock):
            await hang()
    assert cancelled.is_set()
    assert clock.monotonic() == 5


async def test_step_timeout_raises_step_timeout() -> None:
    clock = FakeClock()
    with pytest.raises(StepTimeout, match="search"):
        async with deadline(60, clock=clock):
            async with timeout(3, clock=clock, name="search"):
                await clock.sleep(10)
    assert clock.monotonic() == 3


async def test_enclosing_deadline_wins_inside_a_longer_step() -> None:
    clock = FakeClock()
    with pytest.raises(DeadlineExceeded):
        async with deadline(2, clock=clock):
            async with timeout(30, clock=clock):
                await clock.sleep(10)
    assert clock.monotonic() == 2


async def test_deadline_enforced_in_a_child_task_with_its_own_scope() -> None:
    clock = FakeClock()
    outcome: list[str] = []

    async def tool() -> None:
        try:
            async with timeout(100, clock=clock, name="tool"):
                await clock.sleep(50)
        except DeadlineExceeded:
            outcome.append("deadline")

    async with deadline(4, clock=clock):
        task = asyncio.get_running_loop().create_task(tool())
    await task  # the turn's scope is gone, but the tool inherited its limit
    assert outcome == ["deadline"]
    assert clock.monotonic() == 4


async def test_passed_deadline_fails_at_entry() -> None:
    clock = FakeClock()
    async with deadline(1, clock=clock):
        clock.advance(2)
        with pytest.raises(DeadlineExceeded):
            check_deadline(clock)
        with pytest.raises(DeadlineExceeded):
            async with timeout(10, clock=clock):
                pass  # pragma: no cover


async def test_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    clock = FakeClock()

    async def body() -> None:
        async with deadline(100, clock=clock):
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_works_on_the_system_clock() -> None:
    with pytest.raises(StepTimeout):
        async with timeout(0.01):
            await asyncio.sleep(5)
    async with deadline(5):
        await asyncio.sleep(0)
