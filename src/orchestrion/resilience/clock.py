"""Time as a seam: everything in the resilience layer reads time and sleeps through a Clock.

`now()` is wall-clock (time.time-like) and is what gets stored or shared between processes
(deadlines, journaled attempt times, breaker probe times). `monotonic()` measures
durations inside one process. `FakeClock` runs on virtual time so tests never really wait.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """Virtual time for tests: a sleep returns as soon as the event loop has nothing else
    to do, with the clock moved to the sleeper's wake-up time.

    Sleepers wake in order of their wake-up time, so concurrent sleeps (a hedge timer
    racing a slow call, a timeout racing a hang) resolve as they would in real time,
    without waiting. "Nothing else to do" is approximated by letting the loop run
    `settle` rounds before each jump, which is plenty for in-memory test code.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, settle: int = 30) -> None:
        self._wall0 = start
        self._t = 0.0
        self._settle = settle
        self._seq = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._driver: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []  # every requested sleep, in call order

    def now(self) -> float:
        return self._wall0 + self._t

    def monotonic(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        """Move time forward by hand and wake every sleeper that is now due."""
        self._t += max(0.0, seconds)
        while self._waiters and self._waiters[0][0] <= self._t:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (self._t + seconds, self._seq, fut))
        if self._driver is None or self._driver.done():
            self._driver = loop.create_task(self._drive())
        await fut  # cancelling the sleeper cancels fut; the driver skips it

    async def _drive(self) -> None:
        while self._waiters:
            # Let every runnable task run (and maybe register an earlier sleep) first.
            for _ in range(self._settle):
                await asyncio.sleep(0)
            while self._waiters and self._waiters[0][2].done():
                heapq.heappop(self._waiters)
            if not self._waiters:
                break
            at = self._waiters[0][0]
            if at > self._t:
                self._t = at
            while self._waiters and self._waiters[0][0] <= self._t:
                _, _, fut = heapq.heappop(self._waiters)
                if not fut.done():
                    fut.set_result(None)
