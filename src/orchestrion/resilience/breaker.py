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
"probes", "outcomes"}. (1) state/epoch/changed_at/probe_at/rate/probes form one register
ordered by `epoch`: every transition is epoch+1, written by CAS from the epoch the writer
read; a writer that loses the CAS reloads and, if the epoch moved, adopts the stored state
instead of re-applying its transition (someone else already decided); if only the
outcomes moved, it re-applies its change on top. A higher epoch always wins.
(2) `outcomes` maps a worker id to that worker's window, published as wall-clock time
buckets {"epoch", "at", "width", "horizon", "buckets": {"<index>": [calls, failures,
slow]}}; each key is written only by its owner (last write wins per key). Outcomes count
by WHEN they happened: a bucket counts while it is younger than the horizon
(`window_seconds` for a time window; `peer_ttl`, default `window_seconds`, for a count
window), whether or not its worker is still alive; entries of another epoch, or whose
buckets all aged out, are ignored and pruned. The breaker trips on the fleet's combined
window: this worker's live window plus the others' published outcomes.
(3) `probes.claims` maps a probe token to its expiry, so a worker that dies holding a
half-open probe slot loses it after `probe_timeout`.
(4) Outcomes of a closed epoch that reach the store after that epoch opened the breaker
(a worker that learned of it late, or published on its way out) are added to `rate`, the
window that opened it: `orchestrion breakers` shows every call that was made.

Staleness bound. A closed breaker never awaits the store on a call's path: it publishes
its window and loads the fleet's in the background (`BackgroundSync`), `sync_interval`
seconds after the last sync while it records outcomes, sooner after `sync_every` failures
or slow calls; it admits calls on a view at most 2 x `sync_interval` old (plus a store
round trip). Only its first call, and the first after an idle spell longer than that,
load the shared state before admitting. Transitions are written through at once.
`close()` publishes what is left (call it before the process exits). Without a store the
breaker is local to the process and nothing is stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, NamedTuple, NoReturn, Protocol, TypeVar

from orchestrion.resilience.background import BackgroundSync
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock
from orchestrion.resilience.errors import BreakerOpen
from orchestrion.resilience.windows import (
    Bucket,
    Counts,
    CountWindow,
    TimeWindow,
    entry_buckets,
    entry_horizon,
    number,
    outcome_entry,
    sum_since,
)

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
        if window_seconds <= 0 or sync_interval <= 0 or (peer_ttl is not None and peer_ttl <= 0):
            raise ValueError("window_seconds, sync_interval and peer_ttl must be > 0 seconds")
        self.name = name
        self.minimum_calls = minimum_calls
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_duration = math.inf if slow_call_duration is None else slow_call_duration
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.wait_in_open = wait_in_open
        self.half_open_probes = half_open_probes
        self.probe_timeout = probe_timeout
        self.sync_every = max(1, sync_every)
        self.sync_interval = sync_interval
        # How long a published outcome counts for the fleet, from when it happened.
        self.peer_ttl = (
            window_seconds if window == "time" or peer_ttl is None else float(peer_ttl)
        )
        self.on_event = on_event
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self._clock = clock
        self._shared = store is not None
        self._store: BreakerStateStore = store if store is not None else _LocalStore()
        # A shared window knows when its outcomes happened (wall clock), to publish them.
        stamp = clock.now if self._shared else None
        self._window: CountWindow | TimeWindow
        if window == "count":
            self._window = CountWindow(window_size, stamp)
            self._width = self.peer_ttl / 10
        else:
            self._window = TimeWindow(window_seconds, stamp or clock.monotonic)
            self._width = self._window.width
        self._state = CLOSED
        self._epoch = 0
        self._probe_at: float | None = None
        self._rate: dict[str, Any] | None = None
        self._permit = Permit(0)
        self._peers: list[Bucket] = []  # the other workers' published outcomes
        # Their sum within the horizon, valid until a bucket ages out (wall clock).
        self._peer_sum: Counts = (0, 0, 0)
        self._peer_sum_until = -math.inf
        # Outcomes recorded since the last publication (shared breakers).
        self._new_calls = self._new_failures = self._new_slow = 0
        self._unhealthy = 0  # failures and slow calls since the last sync
        # Outcomes of the closed epoch that the open epoch `_late_epoch` ended, not in the
        # window that opened it yet (calls in flight, or not published at the transition).
        self._late_epoch = -1
        self._late: Counts = (0, 0, 0)
        # A shared breaker loads the state on its first call (it may be open elsewhere):
        # its view is due for a refresh at _next_sync, too old to admit on at _stale_at.
        self._next_sync = -math.inf if self._shared else math.inf
        self._stale_at = -math.inf if self._shared else math.inf
        self._inflight: asyncio.Future[None] | None = None  # the publication in flight
        self._background = BackgroundSync(f"breaker {name}", self.sync, clock)
        self._probe_seq = 0
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
        """True when a call may pass without any await (closed, view fresh enough)."""
        if self._state != CLOSED:
            return False
        if not self._shared or self._clock.monotonic() < self._next_sync:
            return True
        return self._admit_on_due_view()

    def _admit_on_due_view(self) -> bool:
        """Closed, and the shared view is due for a refresh: refresh it in the background
        and admit while it is younger than 2 x sync_interval; older (the first call, or
        after an idle spell), acquire() loads it before admitting."""
        if self._clock.monotonic() < self._stale_at:
            self._background.poke(urgent=True, news=False)
            return True
        return False

    def _record_success_fast(self, permit: Permit, duration: float) -> bool:
        """Record a success of a call admitted while closed; True when `settle()` must run."""
        slow = duration >= self.slow_call_duration
        if permit.epoch != self._epoch or self._state != CLOSED:
            self._note_late(permit, False, slow)
            return False  # admitted under an older state: says nothing about this one
        self._window.add(False, slow)
        if self._shared:
            self._note(False, slow)
        return slow and self._tripped()

    def _note(self, failed: bool, slow: bool) -> None:
        """Count a recorded outcome for publication and make sure it will be published."""
        self._new_calls += 1
        if failed or slow:
            self._new_failures += failed
            self._new_slow += slow
            self._unhealthy += 1
            self._background.poke(urgent=self._unhealthy >= self.sync_every)
        else:
            self._background.poke()

    def _note_late(self, permit: Permit, failed: bool, slow: bool) -> None:
        """An outcome of a call admitted while closed that ended after the breaker opened:
        it belongs to the window that opened it (published with the next sync)."""
        if permit.epoch + 1 == self._epoch == self._late_epoch and permit.probe is None:
            c, f, s = self._late
            self._late = (c + 1, f + failed, s + slow)
            self._background.poke()

    # ---- public async API --------------------------------------------------------------

    async def acquire(self) -> Permit:
        """Admit a call or raise BreakerOpen. Hand the permit back to `record`."""
        if self._fast_admit():
            return self._permit
        if self._shared and self._clock.monotonic() >= self._next_sync:
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
            doc, _ = await self._update(self._claim_mutation(token))
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
        if outcome == "ignored":
            return
        failed = outcome == "failure"
        slow = duration >= self.slow_call_duration
        if permit.epoch != self._epoch or self._state != CLOSED:
            self._note_late(permit, failed, slow)
            return  # admitted under an older state: says nothing about this one
        self._window.add(failed, slow)
        if self._shared:
            self._note(failed, slow)
        # Only a failure or a slow call can push a rate up: evaluate on those alone.
        if (failed or slow) and self._tripped():
            await self.settle()

    async def settle(self) -> None:
        """Persist the transition the window asks for (after the publication in flight,
        which may have made it already)."""
        while (inflight := self._publication()) is not None:
            await asyncio.shield(inflight)
        if self._state == CLOSED:
            inflight = self._inflight = self._start_publication()
            await asyncio.shield(inflight)

    async def sync(self) -> None:
        """Publish this worker's window, load the fleet's, adopt what is newer (one load,
        and a compare-and-set when something changed). Concurrent callers share one."""
        inflight = self._publication()
        if inflight is None:
            inflight = self._inflight = self._start_publication()
        await asyncio.shield(inflight)

    def _start_publication(self) -> asyncio.Task[None]:
        # A task of its own: a caller cancelled mid-way does not cut a compare-and-set
        # short, and other callers can wait for it.
        return asyncio.get_running_loop().create_task(
            self._publish(), name=f"publish breaker {self.name}"
        )

    def _publication(self) -> asyncio.Future[None] | None:
        """The publication in flight on this event loop, if any (one at a time, so two
        never carry the same outcomes)."""
        inflight = self._inflight
        if inflight is None or inflight.done():
            return None
        if inflight.get_loop() is not asyncio.get_running_loop():
            return None  # left over from an event loop that has ended
        return inflight

    async def close(self) -> None:
        """Publish the outcomes not published yet and stop the background sync. Call it
        before the process exits (BreakerRegistry.close() does); idempotent, and the
        breaker stays usable (a later call starts syncing again)."""
        if not self._shared:
            return
        await self._background.close()
        if self._new_calls or self._late[0]:
            await self.sync()

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

    def _totals(self) -> Counts:
        c, f, s = self._window.totals()
        if not self._peers:
            return c, f, s
        pc, pf, ps = self._peer_totals()
        return c + pc, f + pf, s + ps

    def _peer_totals(self) -> Counts:
        """The other workers' outcomes younger than the horizon (cached until the oldest
        of them ages out, so a failure does not re-add every bucket of the fleet)."""
        now = self._clock.now()
        if now < self._peer_sum_until:
            return self._peer_sum
        since = now - self.peer_ttl
        self._peer_sum = sum_since(self._peers, since)
        oldest = min((b[0] for b in self._peers if b[0] > since), default=math.inf)
        self._peer_sum_until = oldest + self.peer_ttl
        return self._peer_sum

    def _set_peers(self, buckets: list[Bucket]) -> None:
        self._peers = buckets
        self._peer_sum_until = -math.inf

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
            "v": 2,
            "state": CLOSED,
            "epoch": 0,
            "changed_at": self._clock.now(),
            "probe_at": None,
            "rate": None,
            "probes": None,
            "outcomes": {},
        }

    def _transition(self, doc: dict[str, Any], to: str, now: float) -> None:
        """Apply a transition to a loaded document (epoch + 1)."""
        doc["state"] = to
        doc["epoch"] = int(doc["epoch"]) + 1
        doc["changed_at"] = now
        doc["outcomes"] = {}
        doc.pop("windows", None)  # the summaries of version-1 documents
        doc["probe_at"] = now + self.wait_in_open if to == OPEN else None
        doc["probes"] = {"claims": {}, "successes": 0} if to == HALF_OPEN else None
        if to == CLOSED:
            doc["rate"] = None

    async def _publish(self) -> None:
        """One publication; afterwards, forget the outcomes it stored."""
        epoch = self._epoch
        taken: dict[str, Counts] = {}
        _, stored = await self._update(lambda doc: self._m_publish(doc, taken))
        if stored and self._epoch == epoch:
            c, f, s = taken.get("new", (0, 0, 0))
            self._new_calls = max(0, self._new_calls - c)
            self._new_failures = max(0, self._new_failures - f)
            self._new_slow = max(0, self._new_slow - s)
            late, gone = self._late, taken.get("late", (0, 0, 0))
            self._late = (late[0] - gone[0], late[1] - gone[1], late[2] - gone[2])

    def _m_publish(self, doc: dict[str, Any], taken: dict[str, Counts]) -> dict[str, Any] | None:
        """Publish this worker's window (and late outcomes) into `doc`; open the breaker
        when the fleet's window says so. `taken`: what the mutation carries."""
        taken.clear()
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
        if self._late[0] and epoch == self._late_epoch and doc["state"] == OPEN:
            taken["late"] = self._fold_late(doc)
            write = True
        if self._shared and doc["state"] == CLOSED:
            outcomes, peers = self._merged_outcomes(doc.get("outcomes"), epoch, now)
            self._set_peers(peers)
            taken["new"] = self._unpublished()
            if outcomes != doc.get("outcomes"):
                doc["outcomes"] = outcomes
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

    def _merged_outcomes(
        self, raw: Any, epoch: int, now: float
    ) -> tuple[dict[str, Any], list[Bucket]]:
        """The published outcomes with this worker's window in, and the others' buckets.
        Entries of another epoch, malformed, or aged out are pruned."""
        out: dict[str, Any] = {}
        peers: list[Bucket] = []
        raw = raw if isinstance(raw, Mapping) else {}
        for worker, entry in raw.items():
            if worker == self.worker_id:
                continue
            buckets = entry_buckets(entry, epoch)  # [] unless a well-formed entry
            if not buckets:
                continue
            since = now - entry_horizon(entry, self.peer_ttl)
            if not any(start > since for start, *_ in buckets):
                continue
            out[str(worker)] = entry
            peers.extend(buckets)
        mine = outcome_entry(
            epoch, now, self._width, self.peer_ttl, self._window.buckets(self._width)
        )
        if mine["buckets"]:
            old = raw.get(self.worker_id)
            unchanged = (
                isinstance(old, Mapping)
                and old.get("epoch") == epoch
                and old.get("buckets") == mine["buckets"]
            )
            out[self.worker_id] = old if unchanged else mine
        return out, peers

    def _fold_late(self, doc: dict[str, Any]) -> Counts:
        """Add the late outcomes to `rate`, the window that opened the breaker."""
        rate = doc.get("rate")
        rate = rate if isinstance(rate, dict) else {}
        calls = number(rate.get("calls")) or 0.0
        fr = number(rate.get("failure_rate")) or 0.0
        sr = number(rate.get("slow_call_rate")) or 0.0
        c, f, s = self._late
        total = calls + c
        doc["rate"] = {
            **rate,
            "failure_rate": (fr * calls + f) / total,
            "slow_call_rate": (sr * calls + s) / total,
            "calls": int(total),
            "late": int(number(rate.get("late")) or 0) + c,
        }
        return c, f, s

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
    ) -> tuple[dict[str, Any], bool]:
        """Load, mutate, compare-and-set; retry on conflict; adopt the result. Returns the
        document and whether the store holds this mutation (written, or nothing to write).
        """
        doc: dict[str, Any] = self._last
        stored = decided_here = False
        try:
            for _ in range(_CAS_TRIES):
                loaded, version = await self._store.load(self.name)
                doc = loaded if loaded is not None else self._fresh()
                before = int(doc["epoch"])  # mutate() may change doc in place
                new = mutate(doc)
                if new is None:
                    stored = True
                    break
                if await self._store.save_if(self.name, version, new):
                    doc, stored = new, True
                    decided_here = int(new["epoch"]) > before
                    break
            else:
                log.warning("breaker %s: gave up after %d CAS conflicts", self.name, _CAS_TRIES)
        except Exception as exc:
            # The store is down: keep protecting this process on a local copy.
            self._emit(
                "breaker.store_error",
                {"breaker": self.name, "error_type": type(exc).__name__, "error": str(exc)},
            )
            local = json.loads(json.dumps(self._last))
            before = int(local["epoch"])
            new = mutate(local)
            doc = new if new is not None else self._last
            decided_here = int(doc["epoch"]) > before
        self._adopt(doc, decided_here)
        if self._shared:
            now = self._clock.monotonic()
            self._next_sync = self._background.due = now + self.sync_interval
            self._stale_at = now + 2 * self.sync_interval
            self._unhealthy = 0
        return doc, stored

    def _adopt(self, doc: dict[str, Any], decided_here: bool) -> None:
        epoch = int(doc["epoch"])
        if epoch < self._epoch:
            return  # never go back in time
        self._last = doc
        if epoch == self._epoch:
            if self._shared and doc["state"] == CLOSED:
                self._set_peers(self._peer_buckets(doc, epoch))
            return
        before, before_epoch = self._state, self._epoch
        self._state = _STATES.get(doc["state"], CLOSED)
        self._epoch = epoch
        self._probe_at = doc.get("probe_at")
        self._rate = doc.get("rate")
        self._permit = Permit(epoch)
        self._window.reset()
        # A new epoch starts from an empty window. When it is the opening of the closed
        # epoch this worker was in, that epoch's outcomes the opener could not see (not
        # published yet; calls still in flight) go to the window that opened it.
        opened = before == CLOSED and self._state == OPEN and epoch == before_epoch + 1
        unseen = (0, 0, 0) if decided_here else self._unpublished()
        self._late_epoch = epoch if opened and self._shared else -1
        self._late = unseen if self._late_epoch == epoch else (0, 0, 0)
        if self._late[0]:
            self._background.poke()
        self._new_calls = self._new_failures = self._new_slow = 0
        self._set_peers(self._peer_buckets(doc, epoch) if self._shared else [])
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
                    "source": "local" if decided_here else "store",
                },
            )

    def _unpublished(self) -> Counts:
        return self._new_calls, self._new_failures, self._new_slow

    def _peer_buckets(self, doc: Mapping[str, Any], epoch: int) -> list[Bucket]:
        raw = doc.get("outcomes")
        if not isinstance(raw, Mapping):
            return []
        return [
            bucket
            for worker, entry in raw.items()
            if worker != self.worker_id
            for bucket in entry_buckets(entry, epoch)
        ]


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
