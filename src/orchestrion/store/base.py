"""The Store interface every backend implements, and the records it speaks in.

The interface speaks in whole operations ("record this step, fenced by this lease"),
never in SQL, so each backend can do each operation in one transaction its own way. A
single conformance suite (tests/store/conformance.py) runs against every backend.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from orchestrion.errors import LeaseLost, StoreError

RunStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Durability = Literal["normal", "full"]
# What a new turn does when its conversation already has one in progress: wait behind it,
# be refused (ConversationBusy), or cancel it first. The store sees only "enqueue" and
# "reject": the runtime cancels the active runs before it queues an "interrupt".
BusyPolicy = Literal["enqueue", "reject", "interrupt"]


def run_status(value: str) -> RunStatus:
    """A stored run status as the RunStatus it is (StoreError for one this version does not
    know: the store was written by a newer orchestrion)."""
    if value not in get_args(RunStatus):
        raise StoreError(f"unknown run status {value!r} in the store (a newer orchestrion?)")
    return cast(RunStatus, value)


@dataclass(frozen=True, slots=True)
class NewConversation:
    """A conversation for `create_run` to create, in the same transaction, when its id is
    not taken yet (so a turn on a new conversation costs one commit, not two)."""

    agent: str
    ttl_seconds: float
    state: str


@dataclass(slots=True)
class ConversationRecord:
    id: str
    tenant: str
    agent: str
    state: str
    version: int  # bumped once per completed turn
    message_count: int
    ttl_seconds: float
    created_at: float
    updated_at: float
    expires_at: float


@dataclass(slots=True)
class MessageRecord:
    """One message of a conversation's history, with its place in it."""

    index: int  # its position in the history, from 0 (the cursor of paged reads)
    run_id: str  # the run whose completion appended it
    body: dict[str, Any]  # the JSON-ready message


@dataclass(slots=True)
class SummaryRecord:
    """A summary of a stretch of a conversation's history, made by a summarising context
    policy: it stands for messages `first_index`..`last_index` (inclusive) in the model
    requests of later turns. `label` names the point of the run that made it (one summary
    per run and label), so a resumed run finds the summary it already made."""

    conversation_id: str
    run_id: str
    label: str
    first_index: int
    last_index: int
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    created_at: float


@dataclass(slots=True)
class RunRecord:
    id: str
    conversation_id: str
    tenant: str
    agent: str
    status: str
    input: dict[str, Any]
    trace_id: str
    created_at: float
    position: int  # global queue order: runs of one conversation execute in this order
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    owner: str | None = None
    epoch: int = 0
    lease_expires_at: float | None = None
    deadline_at: float | None = None
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of ownership of a running run. Every journal write presents it; a write with
    a stale epoch (the run was taken over) is refused with LeaseLost."""

    run_id: str
    owner: str
    epoch: int


@dataclass(slots=True)
class StepRecord:
    run_id: str
    seq: int
    name: str
    status: Literal["ok", "error"]
    result: str | None  # JSON text, decoded by the journal
    error: str | None  # JSON text {"type", "message"}
    idempotency_key: str
    started_at: float
    finished_at: float
    epoch: int


@dataclass(slots=True)
class EventRecord:
    """One append-only event of a run. Spans are events too: a span's closing event
    carries `end` and `latency_ms`; point events have start == end."""

    run_id: str
    seq: int
    type: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start: float
    end: float | None = None
    latency_ms: float | None = None
    status: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EffectRecord:
    idempotency_key: str
    kind: str
    run_id: str
    conversation_id: str
    tenant: str
    payload: dict[str, Any]
    created_at: float


@dataclass(slots=True)
class RunCompletion:
    """Everything that changes when a run ends, applied in one transaction."""

    status: RunStatus
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    # JSON-ready messages appended to the conversation history (only for succeeded runs).
    new_messages: list[dict[str, Any]]
    conversation_state: str
    events: list[EventRecord]
    # Steps recorded lazily that no commit carried yet (read-only steps), recorded in the
    # same transaction.
    steps: list[StepRecord] = field(default_factory=list)


@dataclass(slots=True)
class TurnState:
    """What an executor reads before it runs a claimed run's turn."""

    run: RunRecord
    conversation: ConversationRecord
    steps: dict[int, StepRecord]
    last_event_seq: int


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Limits of one queue (an agent name) shared by every worker of the store, enforced
    atomically by `Store.claim` when a queued run starts (takeovers of running runs are
    never refused: they do not add a running run).

    - `max_running`: at most this many runs of the queue are `running` at once.
    - `max_per_second`: starts per second, a token bucket of `burst` tokens (default:
      max(1, max_per_second)) refilled at `max_per_second` tokens a second, measured
      with the claimers' `now` (keep clocks in sync, as for leases).
    """

    queue: str
    max_running: int | None = None
    max_per_second: float | None = None
    burst: float | None = None

    def __post_init__(self) -> None:
        if self.max_running is not None and self.max_running < 1:
            raise ValueError(f"queue {self.queue!r}: max_running must be at least 1")
        if self.max_per_second is not None and not self.max_per_second > 0:
            raise ValueError(f"queue {self.queue!r}: max_per_second must be positive")
        if self.burst is not None and self.burst < 1:
            raise ValueError(f"queue {self.queue!r}: burst must be at least 1")

    @property
    def bucket_size(self) -> float:
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, float(self.max_per_second or 1.0))

    @property
    def active(self) -> bool:
        return self.max_running is not None or self.max_per_second is not None

    def take_token(self, bucket: tuple[Any, ...] | None, now: float) -> float | None:
        """The tokens left after one start at `now`, from the stored bucket (tokens,
        updated_at) (None: a new, full bucket); None when no token is available."""
        rate = self.max_per_second
        assert rate is not None
        size = self.bucket_size
        if bucket is None:
            level = size
        else:
            tokens, updated_at = float(bucket[0]), float(bucket[1])
            level = min(size, tokens + max(0.0, now - updated_at) * rate)
        if level < 1.0 - 1e-9:
            return None
        return max(0.0, level - 1.0)


@dataclass(slots=True)
class PurgeReport:
    conversations: int = 0
    runs: int = 0
    events: int = 0


def check_limit(limit: int | None) -> None:
    """Refuse what backends would read differently (SQLite takes LIMIT -1 as no limit)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more (or None for no limit), not {limit}")


class Store(abc.ABC):
    """A durable home for conversations, runs, steps, events and side effects."""

    url: str
    # True when `wait_for_events` is woken by the backend (e.g. PostgreSQL NOTIFY), so
    # readers may pass it a long fallback timeout instead of polling often.
    notifies_events: bool = False

    # ---- lifecycle --------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, check the schema (never touching a foreign or newer store), migrate."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    # ---- wake-ups (optional) ----------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return when new work may be claimable (a run was queued, released or ended),
        or after `timeout` seconds at the latest. Spurious returns are allowed: callers
        always look at the store afterwards. Default: just sleep (polling)."""
        await asyncio.sleep(timeout)

    async def notify_work(self) -> None:  # noqa: B027
        """Wake the workers waiting in `wait_for_work` (of every process on this store).
        Default: nothing (they poll)."""

    async def wait_for_events(self, run_id: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return when the run may have new events (or ended), or after `timeout` seconds
        at the latest. Spurious returns are allowed: readers always look at the store
        afterwards. Default: just sleep (polling)."""
        await asyncio.sleep(timeout)

    # ---- conversations ----------------------------------------------------------------

    @abc.abstractmethod
    async def ensure_conversation(
        self, conversation_id: str, *, tenant: str, agent: str, ttl_seconds: float, state: str
    ) -> ConversationRecord:
        """Return the conversation, creating it when new. Another tenant's id: NotFound."""

    @abc.abstractmethod
    async def get_conversation(
        self, conversation_id: str, *, tenant: str | None = None
    ) -> ConversationRecord:
        """NotFound for an unknown id, or one that belongs to another tenant."""

    @abc.abstractmethod
    async def history(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's messages in order (JSON-ready dicts)."""

    @abc.abstractmethod
    async def history_page(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int | None,
    ) -> list[MessageRecord]:
        """A page of the history, always in order (oldest first), through the index.

        Only messages whose index is > `after` and < `before` (each when given). With
        `after`, the page is the first `limit` of them (paging forward); without it, the
        last `limit` (paging backward from the newest). `limit` None: all of them. An
        unknown conversation has no messages."""

    @abc.abstractmethod
    async def history_tail(
        self,
        conversation_id: str,
        *,
        limit: int,
        after: int | None = None,
        before: int | None = None,
    ) -> list[MessageRecord]:
        """The newest `limit` messages whose index is > `after` and < `before` (each when
        given), in order (oldest first), through the index: a turn's context window."""

    # ---- context summaries ------------------------------------------------------------

    @abc.abstractmethod
    async def load_summaries(self, conversation_id: str) -> list[SummaryRecord]:
        """The conversation's stored summaries (a handful: saving one prunes the older
        ones), the one covering the most messages first."""

    @abc.abstractmethod
    async def save_summary(
        self, lease: Lease, summary: SummaryRecord, *, drop: tuple[int, int] | None = None
    ) -> SummaryRecord:
        """Store a summary made by the lease's run (fenced). Idempotent: when the run
        already stored one under the same label, that one is kept and returned. Summaries
        of other runs are pruned, except the newest of them (the one a resumed run
        started from). `drop` = (first, last): delete the history messages with an
        index in that range, in the same transaction (the agent keeps only the summary
        of them, `retain="summary"`)."""

    @abc.abstractmethod
    async def set_conversation_state(
        self,
        lease: Lease,
        conversation_id: str,
        expected: str,
        new: str,
        events: list[EventRecord],
    ) -> None:
        """Move the conversation from `expected` to `new` (fenced). The state machine is
        checked by the engine; the store refuses when the current state is not `expected`."""

    @abc.abstractmethod
    async def close_conversation(
        self, conversation_id: str, *, tenant: str | None = None, now: float
    ) -> ConversationRecord:
        """Close the conversation (state CLOSED) and return it: `create_run` refuses it
        from then on (ConversationClosed); its history, runs and events stay readable
        until it expires and is purged. Closing a closed conversation returns it as it
        is. Refused with ConversationBusy while it has a queued or running run (checked
        atomically with `create_run`: no run is queued in between). NotFound for an
        unknown id, or another tenant's (when `tenant` is given)."""

    # ---- runs -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_run(
        self,
        *,
        run_id: str,
        conversation_id: str,
        tenant: str,
        agent: str,
        input: dict[str, Any],
        trace_id: str,
        deadline_at: float | None,
        busy_policy: BusyPolicy,
        event: EventRecord,
        new_conversation: NewConversation | None = None,
    ) -> RunRecord:
        """Queue a run. With busy_policy "reject", raise ConversationBusy when the
        conversation already has a queued or running run (checked atomically); "interrupt"
        queues like "enqueue" here (the caller cancelled the active runs first).

        With `new_conversation`, a conversation of that id is created first when there is
        none (same transaction); an existing one of another tenant is still NotFound.

        A conversation that takes no more turns refuses the run: a closed one
        (ConversationClosed), and one past its `expires_at` without a queued or running
        run (ConversationExpired: it is EXPIRED, and `purge_expired` deletes it)."""

    @abc.abstractmethod
    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord: ...

    @abc.abstractmethod
    async def list_runs(
        self,
        *,
        conversation_id: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        before_position: int | None = None,
        after_position: int | None = None,
        status: str | Sequence[str] | None = None,
        agent: str | None = None,
        oldest_first: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` runs, newest first (highest position first); with `oldest_first`,
        the oldest first. Filters, all optional and combined: the conversation, the
        tenant, position < `before_position` and > `after_position` (the cursors of
        paged reads: pass the last position of a page to read the next), one status or
        any of several, the agent (queue). So: paging back from the newest is
        `before_position=<the page's lowest>`; paging forward, `after_position=<the page's
        highest>, oldest_first=True`."""

    @abc.abstractmethod
    async def next_claimable(
        self,
        *,
        agents: Collection[str],
        limits: Sequence[QueueLimits] = (),
        limit: int = 20,
    ) -> list[RunRecord]:
        """Queued runs at the head of their conversation's queue, oldest first, of the
        given agents only, leaving out queues that `limits` says are full right now (at
        `max_running`, or with an empty token bucket). However many runs are running or
        waiting behind a limit, the next eligible run of any queue is found. A hint: the
        claim decides, atomically."""

    @abc.abstractmethod
    async def claim_next(
        self,
        *,
        owner: str,
        turn_timeouts: Mapping[str, float | None],
        lease_seconds: float,
        now: float,
    ) -> tuple[Lease, RunRecord] | None:
        """Claim, in one atomic step, the oldest queued run at the head of its
        conversation whose agent is a key of `turn_timeouts` (agent -> its turn timeout,
        which fixes the deadline of a first claim): a dequeue. Concurrent claimers get
        different runs; none loses a race. Returns the lease and the claimed run (whose
        epoch above 1 says it was claimed before), or None when there is none. Queues with
        limits are not dequeued here (they go through `claim` with their limits)."""

    @abc.abstractmethod
    async def queue_heads(self, run_ids: Collection[str]) -> list[RunRecord]:
        """The given runs (unknown ids left out), and for each of their conversations the
        active run that goes first (the running one, else the oldest queued one): what a
        scheduler needs to know whether the runs it waits for can start, or what blocks
        them. Each run appears once."""

    @abc.abstractmethod
    async def cancel_requested(self, run_ids: Collection[str]) -> list[str]:
        """Which of these runs have a cancel request (one read for many running runs)."""

    @abc.abstractmethod
    async def orphan_candidates(
        self, *, now: float, owner_prefix: str, limit: int = 100
    ) -> list[RunRecord]:
        """Running runs whose lease expired before `now`, or whose owner starts with
        `owner_prefix` (this host: the caller checks whether that owner is alive)."""

    @abc.abstractmethod
    async def claim(
        self,
        run_id: str,
        *,
        owner: str,
        expected_epoch: int,
        lease_seconds: float,
        now: float,
        turn_timeout: float | None = None,
        limits: QueueLimits | None = None,
        dead_owner: str | None = None,
    ) -> Lease | None:
        """Take a run: a queued run at the head of its conversation, or a running run
        still at `expected_epoch` (a takeover). Bumps the epoch. None if someone else won.
        The first claim fixes the run's deadline at now + turn_timeout.

        A takeover is checked inside the transaction: the run's lease must have expired
        before `now`, or its owner must be `dead_owner` (an owner the caller proved dead).
        A renewal that lands first makes the takeover lose.

        With `limits` (of the run's queue, i.e. its agent), starting a queued run is also
        refused (None, the run stays queued and can be claimed later) when the queue
        already has `max_running` runs running, or its token bucket is empty; checked and
        updated atomically with the claim, for every process on the store."""

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease, *, lease_seconds: float, now: float) -> bool:
        """Extend the lease; LeaseLost if it was taken over. Returns cancel_requested."""

    async def renew_leases(
        self, leases: Sequence[Lease], *, lease_seconds: float, now: float
    ) -> dict[str, bool | None]:
        """Renew many leases at once: run id -> cancel_requested, or None for a lease that
        was lost. Backends override this with one transaction for all of them."""
        outcome: dict[str, bool | None] = {}
        for lease in leases:
            try:
                outcome[lease.run_id] = await self.renew_lease(
                    lease, lease_seconds=lease_seconds, now=now
                )
            except LeaseLost:
                outcome[lease.run_id] = None
        return outcome

    @abc.abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give a running run back (status queued, same position) for another worker."""

    @abc.abstractmethod
    async def request_cancel(self, run_id: str, *, tenant: str | None = None) -> RunRecord:
        """Cancel a queued run at once; flag a running one for its owner to stop."""

    @abc.abstractmethod
    async def complete_run(self, lease: Lease, completion: RunCompletion, *, now: float) -> None:
        """End the run and, in the same transaction, append the turn to the history, bump
        the conversation version, set its state and refresh its expiry (fenced)."""

    # ---- journal ----------------------------------------------------------------------

    @abc.abstractmethod
    async def load_steps(self, run_id: str) -> dict[int, StepRecord]: ...

    async def load_turn(self, run_id: str) -> TurnState:
        """The run, its conversation, its recorded steps and its last event seq (backends
        read them in one round trip where they can)."""
        run = await self.get_run(run_id)
        return TurnState(
            run=run,
            conversation=await self.get_conversation(run.conversation_id),
            steps=await self.load_steps(run_id),
            last_event_seq=await self.last_event_seq(run_id),
        )

    @abc.abstractmethod
    async def record_steps(
        self,
        lease: Lease,
        steps: Sequence[StepRecord],
        events: list[EventRecord],
        *,
        lease_seconds: float,
        state: str | None = None,
    ) -> None:
        """Record step results (none or more) and events in one fenced transaction: the
        one commit a run makes per durable point. The lease is renewed to now +
        lease_seconds when less than half of that is left. With `state`, the run's
        conversation moves to it in the same transaction (the engine checked the
        transition; state changes ride with the run's next commit)."""

    async def record_step(
        self,
        lease: Lease,
        step: StepRecord,
        events: list[EventRecord],
        *,
        lease_seconds: float,
        state: str | None = None,
    ) -> None:
        """Record one step result and events (see `record_steps`)."""
        await self.record_steps(lease, [step], events, lease_seconds=lease_seconds, state=state)

    # ---- events -----------------------------------------------------------------------

    @abc.abstractmethod
    async def append_events(
        self, lease: Lease, events: list[EventRecord], *, state: str | None = None
    ) -> None:
        """Append events (fenced); with `state`, also move the run's conversation to it."""

    @abc.abstractmethod
    async def read_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[EventRecord]:
        """The run's events with seq > `after_seq`, in order; at most `limit` of them
        (None: all)."""

    @abc.abstractmethod
    async def read_events_of(self, run_ids: Sequence[str]) -> dict[str, list[EventRecord]]:
        """Every event of each of these runs (in order), in one read: a page of a
        conversation's trace. Runs without events (or unknown) map to []."""

    @abc.abstractmethod
    async def last_event_seq(self, run_id: str) -> int: ...

    # ---- side effects -----------------------------------------------------------------

    @abc.abstractmethod
    async def record_effect(self, effect: EffectRecord) -> bool:
        """Insert unless the idempotency key exists. True when inserted."""

    @abc.abstractmethod
    async def list_effects(
        self, *, conversation_id: str | None = None, kind: str | None = None
    ) -> list[EffectRecord]: ...

    # ---- retention --------------------------------------------------------------------

    @abc.abstractmethod
    async def purge_expired(self, *, now: float) -> PurgeReport:
        """Delete conversations past their expiry (and everything of theirs), unless a
        run of theirs is still queued or running."""

    # ---- shared resilience state ------------------------------------------------------

    @abc.abstractmethod
    async def breaker_load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        """A breaker's shared state and its version (None, 0 when unknown)."""

    @abc.abstractmethod
    async def breaker_save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        """Compare-and-set: store `state` as version+1 if the stored version is `version`."""

    @abc.abstractmethod
    async def list_breakers(self) -> list[tuple[str, dict[str, Any], int]]: ...

    # ---- journaled retry attempts -----------------------------------------------------

    @abc.abstractmethod
    async def load_attempt(self, run_id: str, seq: int) -> dict[str, Any] | None:
        """The retry state last saved for step (run_id, seq), or None when there is none.

        The state is an opaque JSON object (the resilience layer stores an AttemptState:
        the last attempt made, when the next one is due, when the first one started), so
        a worker that takes over a run crashed in the middle of a backoff continues at the
        right attempt number instead of starting over."""

    @abc.abstractmethod
    async def save_attempt(self, lease: Lease, seq: int, state: dict[str, Any]) -> None:
        """Replace the retry state of step (lease.run_id, seq) with `state` (fenced: a stale
        lease, or a run that is no longer running, raises LeaseLost and writes nothing).
        The state is kept until the run's conversation is purged."""

    # ---- cached answers ---------------------------------------------------------------

    @abc.abstractmethod
    async def cache_get(self, key: str) -> dict[str, Any] | None:
        """The value last stored under `key`, or None."""

    @abc.abstractmethod
    async def cache_put(self, key: str, value: dict[str, Any]) -> None:
        """Store `value` under `key`, replacing what was there."""

    @abc.abstractmethod
    async def cache_prune(self, *, older_than: float) -> int:
        """Delete entries last written before `older_than`; returns how many."""
