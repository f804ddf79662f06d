"""Circuit breaker per dependency: closed -> open -> half-open -> closed (or open again).

Closed: calls pass; outcomes go into a sliding window (the last `window_size` calls, or
the last `window_seconds`). When a failure or a slow call is recorded and the window holds
at least `minimum_calls`, a failure rate >= `failure_rate_threshold` or a slow-call rate
>= `slow_call_rate_threshold` (calls that took >= `slow_call_duration`, successful or not)
opens the breaker. Errors the classifier deems the caller's fault (400, 401, ...) are
"ignored": they count neither way.
Open: calls fail fast with BreakerOpen naming the breaker and when it probes next, for
`wait_in_open` seconds.
Half-open: at most `half_open_probes` calls go through as probes; one probe failure opens
it again; `half_open_probes` probe successes close it with an empty window.

Sharing (optional `store`): the state is a JSON document in a BreakerStateStore, updated
only by compare-and-set, so every worker sees one breaker and it survives restarts.

Merge rule. The document is {"v", "state", "epoch", "changed_at", "probe_at", "rate",
"probes", "windows"}. (1) state/epoch/changed_at/probe_at/rate/probes form one register
ordered by `epoch`: every transition is epoch+1, written by CAS from the epoch the writer
read; a writer that loses the CAS reloads and, if the epoch moved, adopts the stored state
instead of re-applying its transition (someone else already decided); if only the windows
moved, it re-applies its change on top. A higher epoch always wins over a lower one.
(2) `windows` maps a worker id to that worker's window summary {"epoch","at","calls",
"failures","slow"}; each key is written only by its owner (last write wins per key);
summaries from another epoch or older than `peer_ttl` are ignored and pruned. The breaker
trips on the fleet's combined window: this worker's live counts plus its peers' summaries.
(3) `probes.claims` maps a probe token to its expiry, so a worker that dies holding a
half-open probe slot loses it after `probe_timeout`.

Staleness bound. A closed breaker never touches the store on the hot path: it syncs (one
load + one CAS publishing its summary) on the first call after `sync_interval` seconds or
`sync_every` recorded outcomes since the last sync. So a worker admits or rejects calls on
a view of the shared state at most `sync_interval` seconds (default 1s) or `sync_every`
outcomes (default 50) old; transitions are written through at once. Without a store the
breaker is local to the process and nothing is stale.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, NoReturn, Protocol, TypeVar

from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.errors import BreakerOpen

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]
Outcome = Literal["success", "failure", "ignored"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
_STATES = {CLOSED: CLOSED, OPEN: OPEN, HALF_OPEN: HALF_OPEN}
_CAS_TRIES = 8


class BreakerStateStore(Protocol):
    """Where a shared breaker's JSON state lives. Version 0 means "no row yet"."""

    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]: ...

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        """Write `state` iff the stored version is still `version` (0: the row is absent).
        The stored version then becomes version + 1. False on conflict."""
        ...


class InMemoryBreakerStore:
    """A BreakerStateStore for tests: JSON round-trips every state, counts its traffic."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, int]] = {}
        self.loads = 0
        self.saves = 0
        self.conflicts = 0

    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        self.loads += 1
        row = self._rows.get(name)
        if row is None:
            return None, 0
        return json.loads(row[0]), row[1]

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        current = self._rows.get(name)
        if (current[1] if current else 0) != version:
            self.conflicts += 1
            return False
        self.saves += 1
        self._rows[name] = (json.dumps(state), version + 1)
        return True

    def peek(self, name: str) -> dict[str, Any] | None:
        row = self._rows.get(name)
        return None if row is None else json.loads(row[0])


class Permit(NamedTuple):
    """Admission ticket: the epoch it was granted in, and the probe token in half-open."""

    epoch: int
    probe: str | None = None


class _CountWindow:
    __slots__ = ("calls", "failures", "idx", "ring", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring = [0] * size  # bit 0: failed, bit 1: slow
        self.idx = 0
        self.calls = self.failures = self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        i = self.idx
        if self.calls == self.size:
            old = self.ring[i]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        self.ring[i] = failed | (slow << 1)
        self.failures += failed
        self.slow += slow
        self.idx = 0 if i + 1 == self.size else i + 1

    def totals(self) -> tuple[int, int, int]:
        return self.calls, self.failures, self.slow

    def reset(self) -> None:
        self.ring = [0] * self.size
        self.idx = self.calls = self.failures = self.slow = 0


class _TimeWindow:
    __slots__ = ("calls", "clock", "cur", "failures", "n", "slow", "width")

    def __init__(self, seconds: float, clock: Clock, buckets: int = 10) -> None:
        self.n = buckets
        self.width = seconds / buckets
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.calls = [0] * self.n
        self.failures = [0] * self.n
        self.slow = [0] * self.n
        self.cur = math.floor(self.clock.monotonic() / self.width)

    def _slot(self) -> int:
        idx = math.floor(self.clock.monotonic() / self.width)
        if idx != self.cur:
            n = self.n
            for i in range(self.cur + 1, min(idx, self.cur + n) + 1):
                j = i % n
                self.calls[j] = self.failures[j] = self.slow[j] = 0
            self.cur = idx
        return idx % self.n

    def add(self, failed: bool, slow: bool) -> None:
        j = self._slot()
        self.calls[j] += 1
        self.failures[j] += failed
        self.slow[j] += slow

    def totals(self) -> tuple[int, int, int]:
        self._slot()
        return sum(self.calls), sum(self.failures), sum(self.slow)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        window: Literal["count", "time"] = "count",
        window_size: int = 100,
        window_seconds: float = 60.0,
        minimum_calls: int = 20,
        failure_rate_threshold: float = 0.5,
        slow_call_duration: float | None = 60.0,
        slow_call_rate_threshold: float = 1.0,
        wait_in_open: float = 30.0,
        half_open_probes: int = 3,
        probe_timeout: float = 120.0,
        store: BreakerStateStore | None = None,
        sync_every: int = 50,
        sync_interval: float = 1.0,
        peer_ttl: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_event: EventSink | None = None,
        worker_id: str | None = None,
    ) -> None:
        if window_size < 1 or minimum_calls < 1 or half_open_probes < 1:
            raise ValueError("window_size, minimum_calls and half_open_probes must be >= 1")
        if not (0 < failure_rate_threshold <= 1 and 0 < slow_call_rate_threshold <= 1):
            raise ValueError("rate thresholds are fractions in (0, 1]")
        self.name = name
        self.minimum_calls = minimum_calls
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_duration = math.inf if slow_call_duration is None else slow_call_duration
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.wait_in_open = wait_in_open
        self.half_open_probes = half_open_probes
        self.probe_timeout = probe_timeout
        self.sync_every = sync_every
        self.sync_interval = sync_interval
        self.peer_ttl = 5 * sync_interval if peer_ttl is None else peer_ttl
        self.on_event = on_event
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._clock = clock
        self._shared = store is not None
        self._store: BreakerStateStore = store if store is not None else _LocalStore()
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(window_size) if window == "count" else _TimeWindow(window_seconds, clock)
        )
        self._state = CLOSED
        self._epoch = 0
        self._probe_at: float | None = None
        self._rate: dict[str, Any] | None = None
        self._permit = Permit(0)
        self._peer = (0, 0, 0)
        self._unsynced = 0
        # A shared breaker syncs on its first call (it may be open already elsewhere).
        self._next_sync = -math.inf if self._shared else math.inf
        self._syncing = False
        self._probe_seq = 0
        self._wrote_epoch = -1
        self._last: dict[str, Any] = self._fresh()

    # ---- views -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """This process's view: "closed", "open" or "half_open"."""
        return self._state

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def probe_at(self) -> float | None:
        return self._probe_at

    def metrics(self) -> dict[str, Any]:
        calls, failures, slow = self._totals()
        return {
            "calls": calls,
            "failure_rate": failures / calls if calls else 0.0,
            "slow_call_rate": slow / calls if calls else 0.0,
        }

    # ---- hot path ----------------------------------------------------------------------

    def _fast_admit(self) -> bool:
        """True when a call may pass without any await (closed, no sync due)."""
        if self._state != CLOSED:
            return False
        if not self._shared:
            return True
        return self._unsynced < self.sync_every and self._clock.monotonic() < self._next_sync

    def _record_success_fast(self, permit: Permit, duration: float) -> bool:
        """Record a success of a call admitted while closed; True when `settle()` must run."""
        if permit.epoch != self._epoch or self._state != CLOSED:
            return False  # admitted under an older state: says nothing about this one
        slow = duration >= self.slow_call_duration
        self._window.add(False, slow)
        self._unsynced += 1
        return slow and self._tripped()

    # ---- public async API --------------------------------------------------------------

    async def acquire(self) -> Permit:
        """Admit a call or raise BreakerOpen. Hand the permit back to `record`."""
        if self._fast_admit():
            return self._permit
        if self._shared and self._sync_due():
            await self.sync()
        for _ in range(_CAS_TRIES):
            state = self._state
            if state == CLOSED:
                return self._permit
            now = self._clock.now()
            if state == OPEN:
                if self._probe_at is not None and now < self._probe_at:
                    self._reject(now)
                await self._update(self._m_half_open)
                continue
            token = f"{self.worker_id}:{self._probe_seq}"
            self._probe_seq += 1
            doc = await self._update(self._claim_mutation(token))
            claims = (doc.get("probes") or {}).get("claims") or {}
            if doc["state"] == HALF_OPEN and token in claims:
                return Permit(int(doc["epoch"]), token)
            if self._state == HALF_OPEN:
                self._reject(now)
        self._reject(self._clock.now())

    async def record(self, permit: Permit, outcome: Outcome, duration: float = 0.0) -> None:
        """Report how an admitted call ended. "ignored": the call says nothing about the
        dependency's health (a 400, a cancellation); it only frees a probe slot."""
        if permit.probe is not None:
            await self._update(self._probe_mutation(permit, outcome))
            return
        if permit.epoch != self._epoch or self._state != CLOSED or outcome == "ignored":
            return  # admitted under an older state: says nothing about this one
        failed = outcome == "failure"
        slow = duration >= self.slow_call_duration
        self._window.add(failed, slow)
        self._unsynced += 1
        # Only a failure or a slow call can push a rate up: evaluate on those alone.
        if (failed or slow) and self._tripped():
            await self.settle()

    async def settle(self) -> None:
        """Persist a transition the local window asks for (or a pending probe result)."""
        await self._update(self._m_publish)

    async def sync(self) -> None:
        """Load the shared state, publish this worker's window summary, adopt what is newer."""
        if self._syncing:
            return
        self._syncing = True
        try:
            await self._update(self._m_publish)
        finally:
            self._syncing = False

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        is_failure: Callable[[BaseException], bool] | None = None,
    ) -> T:
        """Run `fn` through the breaker on its own (the pipeline does this per attempt).
        Every exception counts as a failure unless `is_failure` says otherwise."""
        permit = await self.acquire()
        t0 = self._clock.monotonic()
        try:
            result = await fn()
        except Exception as exc:
            failed = True if is_failure is None else is_failure(exc)
            outcome: Outcome = "failure" if failed else "ignored"
            await self.record(permit, outcome, self._clock.monotonic() - t0)
            raise
        except BaseException:
            await self.record(permit, "ignored", self._clock.monotonic() - t0)
            raise
        await self.record(permit, "success", self._clock.monotonic() - t0)
        return result

    # ---- internals ---------------------------------------------------------------------

    def _sync_due(self) -> bool:
        return self._unsynced >= self.sync_every or self._clock.monotonic() >= self._next_sync

    def _totals(self) -> tuple[int, int, int]:
        c, f, s = self._window.totals()
        pc, pf, ps = self._peer
        return c + pc, f + pf, s + ps

    def _tripped(self) -> bool:
        calls, failures, slow = self._totals()
        if calls < self.minimum_calls:
            return False
        return (
            failures / calls >= self.failure_rate_threshold
            or slow / calls >= self.slow_call_rate_threshold
        )

    def _reject(self, now: float) -> NoReturn:
        rate = (self._rate or {}).get("failure_rate")
        probe_at = self._probe_at if self._state == OPEN else None
        self._emit(
            "breaker.rejected",
            {
                "breaker": self.name,
                "state": self._state,
                "probe_at": probe_at,
                "retry_in": None if probe_at is None else max(0.0, probe_at - now),
            },
        )
        raise BreakerOpen(self.name, probe_at, state=self._state, now=now, failure_rate=rate)

    def _emit(self, type_: str, attrs: dict[str, Any]) -> None:
        sink = self.on_event
        if sink is None:
            return
        try:
            sink(type_, attrs)
        except Exception:  # a broken sink must not break the call it observes
            log.exception("on_event sink failed for %s", type_)

    def _fresh(self) -> dict[str, Any]:
        return {
            "v": 1,
            "state": CLOSED,
            "epoch": 0,
            "changed_at": self._clock.now(),
            "probe_at": None,
            "rate": None,
            "probes": None,
            "windows": {},
        }

    def _transition(self, doc: dict[str, Any], to: str, now: float) -> None:
        """Apply a transition to a loaded document (epoch + 1)."""
        doc["state"] = to
        doc["epoch"] = int(doc["epoch"]) + 1
        doc["changed_at"] = now
        doc["windows"] = {}
        doc["probe_at"] = now + self.wait_in_open if to == OPEN else None
        doc["probes"] = {"claims": {}, "successes": 0} if to == HALF_OPEN else None
        if to == CLOSED:
            doc["rate"] = None
        self._wrote_epoch = doc["epoch"]

    def _m_publish(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        now = self._clock.now()
        epoch = int(doc["epoch"])
        write = False
        if epoch < self._epoch:
            # The store is behind us (wiped, or a write failed earlier): ours is newer.
            doc = json.loads(json.dumps(self._last))
            epoch = self._epoch
            write = True
        elif epoch > self._epoch:
            return None  # someone else moved it on: adopt
        if self._shared and doc["state"] == CLOSED:
            c, f, s = self._window.totals()
            windows = {
                k: w
                for k, w in (doc.get("windows") or {}).items()
                if k != self.worker_id
                and w.get("epoch") == epoch
                and w.get("at", 0.0) >= now - self.peer_ttl
            }
            windows[self.worker_id] = {
                "epoch": epoch,
                "at": now,
                "calls": c,
                "failures": f,
                "slow": s,
            }
            doc["windows"] = windows
            self._peer = _peer_sums(windows, self.worker_id, epoch, now - self.peer_ttl)
            write = True
        if doc["state"] == CLOSED and self._state == CLOSED and self._tripped():
            calls, failures, slow = self._totals()
            doc["rate"] = {
                "failure_rate": failures / calls,
                "slow_call_rate": slow / calls,
                "calls": calls,
            }
            self._transition(doc, OPEN, now)
            write = True
        return doc if write else None

    def _m_half_open(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        if int(doc["epoch"]) != self._epoch or doc["state"] != OPEN:
            return None
        now = self._clock.now()
        if doc.get("probe_at") is not None and now < float(doc["probe_at"]):
            return None
        self._transition(doc, HALF_OPEN, now)
        return doc

    def _claim_mutation(self, token: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        def mutate(doc: dict[str, Any]) -> dict[str, Any] | None:
            if int(doc["epoch"]) != self._epoch or doc["state"] != HALF_OPEN:
                return None
            now = self._clock.now()
            probes = doc.get("probes") or {"claims": {}, "successes": 0}
            claims = {t: e for t, e in probes["claims"].items() if e > now}
            if len(claims) + int(probes["successes"]) >= self.half_open_probes:
                return None
            claims[token] = now + self.probe_timeout
            probes["claims"] = claims
            doc["probes"] = probes
            return doc

        return mutate

    def _probe_mutation(
        self, permit: Permit, outcome: Outcome
    ) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        def mutate(doc: dict[str, Any]) -> dict[str, Any] | None:
            if int(doc["epoch"]) != permit.epoch or doc["state"] != HALF_OPEN:
                return None  # a stale probe: the breaker moved on without it
            now = self._clock.now()
            probes = doc.get("probes") or {"claims": {}, "successes": 0}
            probes["claims"].pop(permit.probe, None)
            if outcome == "failure":
                doc["rate"] = {"failure_rate": 1.0, "slow_call_rate": 0.0, "calls": 1}
                self._transition(doc, OPEN, now)
            elif outcome == "success":
                probes["successes"] = int(probes["successes"]) + 1
                doc["probes"] = probes
                if probes["successes"] >= self.half_open_probes:
                    self._transition(doc, CLOSED, now)
            else:
                doc["probes"] = probes
            return doc

        return mutate

    async def _update(
        self, mutate: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Load, mutate, compare-and-set; retry on conflict; adopt the result."""
        self._wrote_epoch = -1
        doc: dict[str, Any] = self._last
        try:
            for _ in range(_CAS_TRIES):
                loaded, version = await self._store.load(self.name)
                doc = loaded if loaded is not None else self._fresh()
                new = mutate(doc)
                if new is None:
                    break
                if await self._store.save_if(self.name, version, new):
                    doc = new
                    break
                self._wrote_epoch = -1
            else:
                log.warning("breaker %s: gave up after %d CAS conflicts", self.name, _CAS_TRIES)
        except Exception as exc:
            # The store is down: keep protecting this process on a local copy.
            self._emit(
                "breaker.store_error",
                {"breaker": self.name, "error_type": type(exc).__name__, "error": str(exc)},
            )
            local = json.loads(json.dumps(self._last))
            new = mutate(local)
            doc = new if new is not None else self._last
        self._adopt(doc)
        if self._shared:
            self._unsynced = 0
            self._next_sync = self._clock.monotonic() + self.sync_interval
        return doc

    def _adopt(self, doc: dict[str, Any]) -> None:
        epoch = int(doc["epoch"])
        if epoch < self._epoch:
            return  # never go back in time
        source = "local" if epoch == self._wrote_epoch else "store"
        self._wrote_epoch = -1
        self._last = doc
        if self._shared:
            self._peer = _peer_sums(
                doc.get("windows") or {},
                self.worker_id,
                epoch,
                self._clock.now() - self.peer_ttl,
            )
        if epoch == self._epoch:
            return
        before = self._state
        self._state = _STATES.get(doc["state"], CLOSED)
        self._epoch = epoch
        self._probe_at = doc.get("probe_at")
        self._rate = doc.get("rate")
        self._permit = Permit(epoch)
        self._window.reset()
        if self._state != before:
            rate = self._rate or {}
            self._emit(
                "breaker.transition",
                {
                    "breaker": self.name,
                    "from": before,
                    "to": self._state,
                    "epoch": epoch,
                    "failure_rate": rate.get("failure_rate"),
                    "slow_call_rate": rate.get("slow_call_rate"),
                    "calls": rate.get("calls"),
                    "probe_at": self._probe_at,
                    "source": source,
                },
            )


def _peer_sums(windows: dict[str, Any], me: str, epoch: int, min_at: float) -> tuple[int, int, int]:
    """Sum the other workers' summaries that belong to this epoch and are fresh."""
    c = f = s = 0
    for k, w in windows.items():
        if k == me or w.get("epoch") != epoch or float(w.get("at", 0.0)) < min_at:
            continue
        c += int(w.get("calls", 0))
        f += int(w.get("failures", 0))
        s += int(w.get("slow", 0))
    return c, f, s


class _LocalStore:
    """The unshared default: one process-local document, same code path as a real store."""

    def __init__(self) -> None:
        self._doc: str | None = None
        self._version = 0

    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        return (None if self._doc is None else json.loads(self._doc)), self._version

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        if version != self._version:
            return False
        self._doc = json.dumps(state)
        self._version += 1
        return True
