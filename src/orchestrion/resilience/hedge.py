"""Hedging: if the first attempt has not answered after `delay`, start another; the first
success wins and the others are cancelled (and awaited, so nothing keeps running).

A failure before any hedge was started fails the whole thing at once (retrying is the
retry policy's job, not the hedge's). Once hedges are in flight, a failure waits for the
others; if all fail, the last failure is raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    delay: float = 2.0  # seconds before each extra attempt
    max_hedges: int = 1  # extra attempts beyond the first

    def __post_init__(self) -> None:
        if self.delay < 0 or self.max_hedges < 0:
            raise ValueError("delay and max_hedges must be >= 0")


async def hedged(
    fn: Callable[[int], Awaitable[T]],
    policy: HedgePolicy,
    *,
    clock: Clock = SYSTEM_CLOCK,
    name: str = "",
    attempt: int = 1,
    on_event: EventSink | None = None,
    may_fire: Callable[[], bool] | None = None,
) -> T:
    """Run `fn(0)`, then `fn(1)`, ... every `policy.delay` while none has succeeded.
    `may_fire` (e.g. a retry budget) can veto a hedge; the veto is reported."""

    def emit(type_: str, attrs: dict[str, Any]) -> None:
        if on_event is not None:
            try:
                on_event(type_, attrs)
            except Exception:
                log.exception("on_event sink failed for %s", type_)

    async def run(index: int) -> T:
        return await fn(index)

    tasks: list[asyncio.Task[T]] = [asyncio.create_task(run(0))]
    timer: asyncio.Task[None] | None = None
    last_error: BaseException | None = None
    vetoed = False
    try:
        while True:
            running = [t for t in tasks if not t.done()]
            if timer is None and not vetoed and len(tasks) <= policy.max_hedges:
                timer = asyncio.create_task(clock.sleep(policy.delay))
            waiting: set[asyncio.Future[Any]] = set(running)
            if timer is not None:
                waiting.add(timer)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                if t in done:
                    if t.cancelled():
                        last_error = asyncio.CancelledError()
                        continue
                    exc = t.exception()
                    if exc is None:
                        winner = tasks.index(t)
                        others = sum(1 for o in tasks if o is not t and not o.done())
                        if len(tasks) > 1:
                            emit(
                                "hedge.won",
                                {
                                    "pipeline": name,
                                    "attempt": attempt,
                                    "winner": winner,
                                    "cancelled": others,
                                },
                            )
                        return t.result()
                    last_error = exc
            if timer is not None and timer in done:
                timer = None
                if any(not t.done() for t in tasks):
                    if may_fire is None or may_fire():
                        index = len(tasks)
                        emit(
                            "hedge.fired",
                            {
                                "pipeline": name,
                                "attempt": attempt,
                                "hedge": index,
                                "delay": policy.delay,
                            },
                        )
                        tasks.append(asyncio.create_task(run(index)))
                    else:
                        vetoed = True  # no more hedges this attempt; wait for what runs
                        emit(
                            "hedge.skipped",
                            {"pipeline": name, "attempt": attempt, "reason": "vetoed"},
                        )
            if all(t.done() for t in tasks):
                assert last_error is not None
                raise last_error
    finally:
        pending: list[asyncio.Future[Any]] = [t for t in tasks if not t.done()]
        if timer is not None and not timer.done():
            pending.append(timer)
        for f in pending:
            f.cancel()
        if pending:
            # Wait for the losers to unwind so none outlives the call.
            await asyncio.gather(*pending, return_exceptions=True)
