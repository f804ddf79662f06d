"""Retry budgets shared by the fleet: one limit for every process on a store.

Each process counts its own calls and retries per bucket of wall-clock time and publishes
them into the shared document `budget:<dependency>` (in the breakers table, by
compare-and-set); decisions use the fleet's totals over the budget's window. Counts are
indexed by when they happened, so a process that has exited still counts until its
buckets leave the window.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from orchestrion.resilience.background import BackgroundSync
from orchestrion.resilience.breaker import BreakerStateStore
from orchestrion.resilience.budget import RetryBudget
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.windows import number, parse_buckets

BUDGET_PREFIX = "budget:"
_BUDGET_CAS_TRIES = 8


def budget_document_name(dependency: str) -> str:
    """The shared document (in the breakers table) of a dependency's retry budget."""
    return f"{BUDGET_PREFIX}{dependency}"


def merge_budget_document(
    doc: Mapping[str, Any] | None,
    me: str,
    mine: Mapping[int, tuple[int, int]],
    *,
    now: float,
    width: float,
    buckets: int,
) -> tuple[dict[str, Any], dict[int, tuple[int, int]]]:
    """Publish worker `me`'s per-bucket counts into a shared budget document.

    Buckets are indexed by wall-clock time (floor(time / width)), so every worker's
    buckets line up. Returns the new document (one entry per worker; entries whose
    buckets all fell out of the window, and malformed ones, are pruned; `me`'s entry is
    replaced) and the other workers' counts per bucket within the window, summed.
    """
    newest = math.floor(now / width)
    oldest = newest - buckets + 1
    workers: dict[str, Any] = {}
    peers: dict[int, tuple[int, int]] = {}
    raw_workers = doc.get("workers") if isinstance(doc, Mapping) else None
    if isinstance(raw_workers, Mapping):
        for worker, entry in raw_workers.items():
            if worker == me or not isinstance(entry, Mapping):
                continue
            counts = {
                i: (c[0], c[1])
                for i, c in parse_buckets(entry.get("buckets"), 2).items()
                if oldest <= i <= newest
            }
            if not counts:
                continue  # stale (everything expired) or malformed: pruned
            workers[str(worker)] = {
                "at": number(entry.get("at")),
                "buckets": {str(i): list(c) for i, c in sorted(counts.items())},
            }
            for idx, (d, w) in counts.items():
                pd, pw = peers.get(idx, (0, 0))
                peers[idx] = (pd + d, pw + w)
    own = {i: c for i, c in mine.items() if oldest <= i <= newest and (c[0] or c[1])}
    if own:
        workers[me] = {"at": now, "buckets": {str(i): list(c) for i, c in sorted(own.items())}}
    return {"kind": "retry_budget", "width": width, "workers": workers}, peers


class SharedRetryBudget(RetryBudget):
    """A RetryBudget whose limit holds for the whole fleet on one store.

    Each process counts its own calls (deposits) and retries (withdrawals) per bucket of
    wall-clock time, publishes them into the shared document `budget:<dependency>`
    (compare-and-set on `BreakerStateStore`, reloaded on conflict, one entry per worker,
    expired entries pruned) and decides with the fleet's totals:

        fleet retries <= percent * fleet calls + min_retries_per_sec * ttl

    over any window of `ttl` seconds (the floor counts once for the fleet, not per
    worker). Decisions stay synchronous and local: the other workers' counts are the ones
    last loaded. Synchronisation happens in the background (never on a call's path),
    `sync_interval` seconds after a change at the latest, at once after a refusal, and a
    last time on `close()` (call it before the process exits: its counts then keep
    counting for the fleet until they leave the window, whatever became of the process).

    Staleness: a worker's counts reach the store within `sync_interval` (plus a store
    round trip) of changing, and a worker in use reloads the others' counts at least as
    often. A decision therefore misses at most the other workers' retries of the last
    2 * sync_interval (plus round trips), and the fleet can exceed the formula by at most
    the retries it makes in such a span (in practice: a few, when the budget runs out).
    A store that cannot be reached leaves each worker on its last view, never blocks a
    call, and the budget degrades towards per-process budgets.
    """

    __slots__ = (
        "_background",
        "_dirty",
        "_mine",
        "_name",
        "_peers",
        "_state",
        "sync_interval",
        "syncs",
        "worker_id",
    )

    def __init__(
        self,
        dependency: str,
        state: BreakerStateStore,
        *,
        worker_id: str | None = None,
        sync_interval: float = 1.0,
        percent: float = 0.2,
        min_retries_per_sec: float = 10.0,
        ttl: float = 10.0,
        buckets: int = 10,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            percent=percent,
            min_retries_per_sec=min_retries_per_sec,
            ttl=ttl,
            buckets=buckets,
            clock=clock,
        )
        if sync_interval <= 0:
            raise ValueError("sync_interval must be positive")
        self._name = budget_document_name(dependency)
        self._state = state
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.sync_interval = sync_interval
        self._mine: dict[int, list[int]] = {}  # wall-clock bucket -> [deposits, withdrawals]
        self._peers: dict[int, tuple[int, int]] = {}
        self._dirty = False  # counts not published yet
        self._background = BackgroundSync(f"retry budget {dependency}", self.sync, clock)
        self.syncs = 0  # completed synchronisations (for tests and metrics)

    # -- counting (synchronous, local) --

    def _count(self, slot: int) -> None:
        newest = math.floor(self._clock.now() / self._width)
        counts = self._mine.get(newest)
        if counts is None:  # a new bucket: drop the ones that left the window
            oldest = newest - self._buckets + 1
            for idx in [i for i in self._mine if i < oldest]:
                del self._mine[idx]
            counts = self._mine[newest] = [0, 0]
        counts[slot] += 1
        self._dirty = True
        self._background.poke()

    def _totals(self) -> tuple[int, int]:
        newest = math.floor(self._clock.now() / self._width)
        oldest = newest - self._buckets + 1
        d = w = 0
        for table in (self._mine, self._peers):
            for idx, counts in table.items():
                if oldest <= idx <= newest:
                    d += counts[0]
                    w += counts[1]
        return d, w

    def deposit(self) -> None:
        self._count(0)

    def balance(self) -> float:
        d, w = self._totals()
        return self.percent * d + self.reserve - w

    def try_withdraw(self) -> bool:
        if self.balance() < 1.0:
            # Maybe stale: look at the fleet again now (in the background).
            self._background.poke(urgent=True, news=False)
            return False
        self._count(1)
        return True

    # -- synchronisation (asynchronous, in the background) --

    async def sync(self) -> None:
        """Publish this worker's counts and load the other workers' (one load and one
        compare-and-set, repeated on conflict). Raises what the store raises."""
        self._dirty = False
        try:
            await self._sync()
        except BaseException:
            self._dirty = True  # not published: the next sync (or close) tries again
            raise
        finally:
            self._background.due = self._clock.monotonic() + self.sync_interval

    async def _sync(self) -> None:
        doc: dict[str, Any] | None = None
        for _ in range(_BUDGET_CAS_TRIES):
            doc, version = await self._state.load(self._name)
            mine = {i: (c[0], c[1]) for i, c in self._mine.items()}
            new, peers = merge_budget_document(
                doc,
                self.worker_id,
                mine,
                now=self._clock.now(),
                width=self._width,
                buckets=self._buckets,
            )
            if not new["workers"] and doc is None:
                self._peers = peers
                break  # nothing to publish and nothing published: no document needed
            if await self._state.save_if(self._name, version, new):
                self._peers = peers
                break
        else:
            # Lost every race: still decide with the freshest view of the others.
            if doc is not None:
                _, self._peers = merge_budget_document(
                    doc,
                    self.worker_id,
                    {},
                    now=self._clock.now(),
                    width=self._width,
                    buckets=self._buckets,
                )
            self._dirty = True
        self.syncs += 1

    async def close(self) -> None:
        """Publish what is left and stop the background synchronisation. Idempotent: with
        nothing new counted since, it does not touch the store."""
        await self._background.close()
        if self._dirty:
            await self.sync()


__all__ = [
    "BUDGET_PREFIX",
    "SharedRetryBudget",
    "budget_document_name",
    "merge_budget_document",
]
