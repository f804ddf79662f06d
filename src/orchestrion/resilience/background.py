"""Synchronisation with the store off the call path, for shared breakers and budgets.

A `BackgroundSync` runs its owner's `sync` in a task on the running event loop: at
`due` (a monotonic time the owner moves forward after each sync), or at once when urged;
again after `interval` while there is news (`poke()` since the last sync started); and a
last time on `close()`. Nothing on the call path awaits the store: a call only pokes,
which is an attribute write and, once per sync, a task creation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

from orchestrion.resilience.clock import Clock

log = logging.getLogger("orchestrion.resilience")


class BackgroundSync:
    __slots__ = ("_clock", "_closing", "_news", "_sync", "_task", "_urgent", "due", "name")

    def __init__(self, name: str, sync: Callable[[], Awaitable[None]], clock: Clock) -> None:
        self.name = name
        self.due = -math.inf  # monotonic time of the next sync; the owner sets it
        self._sync = sync
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._urgent: asyncio.Event | None = None
        self._news = False
        self._closing = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def poke(self, *, urgent: bool = False, news: bool = True) -> None:
        """There is something to publish (`news`) or a view to refresh: sync at `due`, or
        now when `urgent`. Outside an event loop this does nothing (the owner stays local).
        """
        task = self._task
        if task is None or task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._urgent = asyncio.Event()
            self._news = False
            self._task = loop.create_task(self._run(), name=f"sync {self.name}")
        elif news:
            self._news = True  # arrived during a sync: publish it in the next one
        if urgent and self._urgent is not None:
            self._urgent.set()

    async def _run(self) -> None:
        urgent = self._urgent
        assert urgent is not None
        try:
            while True:
                delay = self.due - self._clock.monotonic()
                if delay > 0 and not self._closing:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(urgent.wait(), delay)
                urgent.clear()
                self._news = False
                try:
                    await self._sync()
                except Exception as exc:  # the owner's sync handles the store; be safe
                    log.warning("%s: background sync failed: %s", self.name, exc)
                    self.due = self._clock.monotonic() + 1.0
                urgent.clear()  # what urged it during the sync was served by it
                if self._closing or not self._news:
                    return
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def close(self) -> None:
        """Run the pending sync now (if any) and wait for it; then nothing runs until the
        next poke. Idempotent. A task of another (finished) event loop is dropped."""
        task = self._task
        if task is None or task.done():
            self._task = None
            return
        if task.get_loop() is not asyncio.get_running_loop():
            self._task = None
            return
        self._closing = True
        if self._urgent is not None:
            self._urgent.set()
        try:
            await asyncio.shield(task)
        finally:
            self._closing = False
