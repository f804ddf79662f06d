"""The store conformance suite: what every Store backend must do, whatever it is built on.

A backend's test module subclasses `StoreConformance` and provides two fixtures:

- `store_factory`: a callable returning a new, *unopened* Store on the test's own database.
  Every call must reach the same database (so a second store sees the first one's data and
  close/reopen keeps it), and each test must start from an empty database.
- `expected_schema_version`: the version a freshly opened store reports (the number of
  the backend's migrations).

Nothing here may depend on a particular backend: only the Store interface, its records
and orchestrion's errors. Records must round-trip exactly (timestamps are floats: store
them as doubles, not as lossy timestamp types), so tests compare whole records.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from orchestrion.errors import (
    ConversationBusy,
    ConversationClosed,
    ConversationExpired,
    LeaseLost,
    NotFound,
    OrchestrionError,
)
from orchestrion.store.base import (
    EffectRecord,
    EventRecord,
    Lease,
    MessageRecord,
    NewConversation,
    QueueLimits,
    RunCompletion,
    RunRecord,
    StepRecord,
    Store,
    SummaryRecord,
)

TENANT = "acme"
OTHER_TENANT = "globex"
AGENT = "support"
IDLE = "AWAITING_INPUT"
WORKING = "PROCESSING_TOOLS"
LONG_TTL = 10_000_000.0
LEASE = 30.0


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def event(run_id: str, seq: int, type: str = "test.event", **kw: Any) -> EventRecord:
    fields: dict[str, Any] = {
        "name": f"{type} #{seq}",
        "trace_id": "t" * 32,
        "span_id": f"{seq:016x}",
        "parent_span_id": None,
        "start": 1_700_000_000.0 + seq,
    }
    fields.update(kw)
    return EventRecord(run_id=run_id, seq=seq, type=type, **fields)


def step(lease: Lease, seq: int, name: str = "model", **kw: Any) -> StepRecord:
    fields: dict[str, Any] = {
        "status": "ok",
        "result": f'{{"seq": {seq}}}',
        "error": None,
        "idempotency_key": f"{lease.run_id}:{seq}",
        "started_at": time.time(),
        "finished_at": time.time(),
        "epoch": lease.epoch,
    }
    fields.update(kw)
    return StepRecord(run_id=lease.run_id, seq=seq, name=name, **fields)


def completion(
    status: str = "succeeded",
    messages: list[dict[str, Any]] | None = None,
    state: str = IDLE,
    events: list[EventRecord] | None = None,
) -> RunCompletion:
    return RunCompletion(
        status=status,  # type: ignore[arg-type]
        result={"answer": "done"} if status == "succeeded" else None,
        error=None if status == "succeeded" else {"type": "Boom", "message": "it broke"},
        new_messages=messages or [],
        conversation_state=state,
        events=events or [],
    )


async def conversation(
    store: Store, cid: str | None = None, *, tenant: str = TENANT, ttl: float = LONG_TTL
) -> str:
    cid = cid or uid("conv")
    await store.ensure_conversation(cid, tenant=tenant, agent=AGENT, ttl_seconds=ttl, state=IDLE)
    return cid


async def new_run(
    store: Store,
    cid: str,
    run_id: str | None = None,
    *,
    tenant: str = TENANT,
    busy_policy: str = "enqueue",
    deadline_at: float | None = None,
    agent: str = AGENT,
) -> RunRecord:
    run_id = run_id or uid("run")
    return await store.create_run(
        run_id=run_id,
        conversation_id=cid,
        tenant=tenant,
        agent=agent,
        input={"message": f"hello from {run_id}", "nested": {"n": [1, 2.5, None, "é"]}},
        trace_id="t" * 32,
        deadline_at=deadline_at,
        busy_policy=busy_policy,  # type: ignore[arg-type]
        event=event(run_id, 1, "run.created"),
    )


async def claim(store: Store, run: RunRecord | str, owner: str = "w1", **kw: Any) -> Lease:
    run_id = run if isinstance(run, str) else run.id
    current = await store.get_run(run_id)
    lease = await store.claim(
        run_id,
        owner=owner,
        expected_epoch=kw.pop("expected_epoch", current.epoch),
        lease_seconds=kw.pop("lease_seconds", LEASE),
        now=kw.pop("now", time.time()),
        **kw,
    )
    assert lease is not None, f"claim of {run_id} unexpectedly lost"
    return lease


async def running_run(store: Store, cid: str | None = None) -> tuple[str, RunRecord, Lease]:
    cid = cid or await conversation(store)
    run = await new_run(store, cid)
    return cid, run, await claim(store, run)


def ids(runs: list[RunRecord]) -> list[str]:
    return [r.id for r in runs]


class StoreConformance:
    """Subclass me and provide `store_factory` and `expected_schema_version` fixtures."""

    @pytest.fixture
    async def store(self, store_factory: Callable[[], Store]) -> AsyncIterator[Store]:
        store = store_factory()
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    # ---- lifecycle ----------------------------------------------------------------------

    async def test_schema_version_is_the_number_of_migrations(
        self, store: Store, expected_schema_version: int
    ) -> None:
        assert expected_schema_version >= 1
        assert await store.schema_version() == expected_schema_version

    async def test_close_and_reopen_keeps_everything(
        self, store_factory: Callable[[], Store], expected_schema_version: int
    ) -> None:
        first = store_factory()
        await first.open()
        await first.open()  # opening twice is harmless
        cid = await conversation(first)
        run = await new_run(first, cid)
        lease = await claim(first, run)
        await first.record_step(lease, step(lease, 1), [event(run.id, 2)], lease_seconds=LEASE)
        await first.complete_run(
            lease, completion(messages=[{"role": "user", "content": "hi"}]), now=time.time()
        )
        await first.record_effect(
            EffectRecord("key-1", "email", run.id, cid, TENANT, {"to": "a@b.c"}, 1.0)
        )
        assert await first.breaker_save_if("model", 0, {"state": "open"})
        other = await new_run(first, cid)
        other_lease = await claim(first, other)
        await first.save_attempt(other_lease, 1, {"attempt": 2, "next_attempt_at": 5.5})
        await first.close()
        await first.close()  # closing twice is harmless

        async with store_factory() as second:
            assert await second.schema_version() == expected_schema_version
            conv = await second.get_conversation(cid)
            assert conv.version == 1 and conv.message_count == 1
            assert await second.history(cid) == [{"role": "user", "content": "hi"}]
            assert (await second.get_run(run.id)).status == "succeeded"
            assert list(await second.load_steps(run.id)) == [1]
            assert [e.seq for e in await second.read_events(run.id)] == [1, 2]
            assert [e.idempotency_key for e in await second.list_effects()] == ["key-1"]
            assert await second.breaker_load("model") == ({"state": "open"}, 1)
            assert await second.load_attempt(other.id, 1) == {
                "attempt": 2,
                "next_attempt_at": 5.5,
            }

        # The same instance can be opened again after closing it.
        await first.open()
        try:
            assert (await first.get_conversation(cid)).id == cid
        finally:
            await first.close()

    async def test_two_stores_on_one_database_see_each_other(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        async with store_factory() as other:
            cid = await conversation(store)
            run = await new_run(other, cid)
            assert (await store.get_run(run.id)).status == "queued"
            leases = await asyncio.gather(
                store.claim(run.id, owner="a", expected_epoch=0, lease_seconds=LEASE, now=1.0),
                other.claim(run.id, owner="b", expected_epoch=0, lease_seconds=LEASE, now=1.0),
            )
            winners = [lease for lease in leases if lease is not None]
            assert len(winners) == 1
            assert (await other.get_run(run.id)).owner == winners[0].owner

    # ---- conversations ------------------------------------------------------------------

    async def test_ensure_conversation_creates_then_returns_the_same_record(
        self, store: Store
    ) -> None:
        before = time.time()
        created = await store.ensure_conversation(
            "c-1", tenant=TENANT, agent=AGENT, ttl_seconds=60.0, state=IDLE
        )
        after = time.time()
        assert (created.id, created.tenant, created.agent, created.state) == (
            "c-1",
            TENANT,
            AGENT,
            IDLE,
        )
        assert (created.version, created.message_count, created.ttl_seconds) == (0, 0, 60.0)
        assert before <= created.created_at <= after
        assert created.expires_at == pytest.approx(created.created_at + 60.0)
        # A second call returns the stored record; it does not overwrite it.
        again = await store.ensure_conversation(
            "c-1", tenant=TENANT, agent="other-agent", ttl_seconds=5.0, state=WORKING
        )
        assert again == created
        assert await store.get_conversation("c-1") == created
        assert await store.get_conversation("c-1", tenant=TENANT) == created

    async def test_another_tenants_conversation_is_not_found(self, store: Store) -> None:
        original = await store.ensure_conversation(
            "c-1", tenant=TENANT, agent=AGENT, ttl_seconds=60.0, state=IDLE
        )
        with pytest.raises(NotFound) as foreign:
            await store.ensure_conversation(
                "c-1", tenant=OTHER_TENANT, agent="x", ttl_seconds=1.0, state=WORKING
            )
        with pytest.raises(NotFound) as unknown:
            await store.get_conversation("c-404")
        # Same answer as for an unknown id: existence is not leaked.
        assert "c-1" in str(foreign.value)
        assert str(foreign.value).replace("c-1", "ID") == str(unknown.value).replace("c-404", "ID")
        with pytest.raises(NotFound) as wrong_tenant:
            await store.get_conversation("c-1", tenant=OTHER_TENANT)
        assert str(wrong_tenant.value).replace("c-1", "ID") == str(unknown.value).replace(
            "c-404", "ID"
        )
        assert await store.get_conversation("c-1") == original

    async def test_unknown_ids_are_not_found_with_the_id_in_the_message(self, store: Store) -> None:
        with pytest.raises(NotFound, match="conv-nope"):
            await store.get_conversation("conv-nope")
        with pytest.raises(NotFound, match="run-nope"):
            await store.get_run("run-nope")
        assert await store.history("conv-nope") == []
        assert await store.load_steps("run-nope") == {}
        assert await store.read_events("run-nope") == []
        assert await store.last_event_seq("run-nope") == 0

    async def test_set_conversation_state(self, store: Store) -> None:
        cid, run, lease = await running_run(store)
        await store.set_conversation_state(lease, cid, IDLE, WORKING, [event(run.id, 2)])
        assert (await store.get_conversation(cid)).state == WORKING
        assert [e.seq for e in await store.read_events(run.id)] == [1, 2]

    async def test_set_conversation_state_with_wrong_expected_state_changes_nothing(
        self, store: Store
    ) -> None:
        cid, run, lease = await running_run(store)
        before = await store.get_conversation(cid)
        with pytest.raises(OrchestrionError) as refused:
            await store.set_conversation_state(
                lease, cid, "STREAMING_RESPONSE", WORKING, [event(run.id, 2)]
            )
        assert not isinstance(refused.value, LeaseLost)
        assert await store.get_conversation(cid) == before
        assert [e.seq for e in await store.read_events(run.id)] == [1]

    # ---- runs: creation and queueing ----------------------------------------------------

    async def test_create_run_queues_with_increasing_positions(self, store: Store) -> None:
        a, b = await conversation(store), await conversation(store)
        runs = [
            await new_run(store, a, "r1"),
            await new_run(store, b, "r2"),
            await new_run(store, a, "r3"),
        ]
        positions = [r.position for r in runs]
        assert positions == sorted(positions) and len(set(positions)) == 3
        for created in runs:
            stored = await store.get_run(created.id)
            assert stored == created
            assert stored.status == "queued" and stored.epoch == 0 and stored.owner is None
            assert stored.input == {
                "message": f"hello from {created.id}",
                "nested": {"n": [1, 2.5, None, "é"]},
            }
            assert not stored.cancel_requested and stored.started_at is None
            assert [e.type for e in await store.read_events(created.id)] == ["run.created"]
        assert ids(await store.list_runs()) == ["r3", "r2", "r1"]
        assert ids(await store.list_runs(conversation_id=a)) == ["r3", "r1"]
        assert ids(await store.list_runs(limit=2)) == ["r3", "r2"]

    async def test_list_runs_filters_by_tenant(self, store: Store) -> None:
        mine = await conversation(store)
        theirs = await conversation(store, tenant=OTHER_TENANT)
        await new_run(store, mine, "r-mine")
        await new_run(store, theirs, "r-theirs", tenant=OTHER_TENANT)
        assert ids(await store.list_runs(tenant=TENANT)) == ["r-mine"]
        assert ids(await store.list_runs(tenant=OTHER_TENANT)) == ["r-theirs"]
        assert ids(await store.list_runs(tenant=TENANT, conversation_id=theirs)) == []

    async def test_create_run_on_unknown_or_foreign_conversation_is_not_found(
        self, store: Store
    ) -> None:
        cid = await conversation(store)
        with pytest.raises(NotFound):
            await new_run(store, "conv-nope", "r-1")
        with pytest.raises(NotFound):
            await new_run(store, cid, "r-2", tenant=OTHER_TENANT)
        assert await store.list_runs() == []
        assert await store.read_events("r-1") == []
        assert await store.read_events("r-2") == []

    @pytest.mark.parametrize("active", ["queued", "running"])
    async def test_busy_policy_reject_raises_and_writes_nothing(
        self, store: Store, active: str
    ) -> None:
        cid = await conversation(store)
        first = await new_run(store, cid, busy_policy="reject")
        if active == "running":
            await claim(store, first)
        with pytest.raises(ConversationBusy):
            await new_run(store, cid, "r-rejected", busy_policy="reject")
        assert ids(await store.list_runs()) == [first.id]
        assert await store.read_events("r-rejected") == []
        with pytest.raises(NotFound):
            await store.get_run("r-rejected")
        # "enqueue" still queues behind it.
        queued = await new_run(store, cid, busy_policy="enqueue")
        assert queued.position > first.position

    async def test_busy_policy_reject_accepts_after_the_active_run_ends(self, store: Store) -> None:
        cid, _run, lease = await running_run(store)
        await store.complete_run(lease, completion(), now=time.time())
        other = await new_run(store, cid, busy_policy="reject")
        assert other.status == "queued"
        # Another conversation is never busy because of this one.
        await new_run(store, await conversation(store), busy_policy="reject")

    async def test_next_claimable_is_queue_heads_of_the_given_agents(self, store: Store) -> None:
        a, b, c = [await conversation(store) for _ in range(3)]
        a1, a2, a3 = [await new_run(store, a, f"a{i}-{uid('r')}") for i in (1, 2, 3)]
        b1 = await new_run(store, b)
        c1 = await new_run(store, c)
        other = await new_run(store, await conversation(store), agent="other")

        async def claimable(limit: int = 20, agents: tuple[str, ...] = (AGENT,)) -> list[str]:
            return ids(await store.next_claimable(agents=agents, limit=limit))

        assert await claimable() == [a1.id, b1.id, c1.id]  # oldest first
        assert await claimable(agents=("other",)) == [other.id]
        assert await claimable(agents=()) == []
        await claim(store, a1)
        assert await claimable() == [b1.id, c1.id]  # a2 waits behind the running a1
        lease_c = await claim(store, c1)
        await store.complete_run(lease_c, completion(), now=time.time())
        assert await claimable() == [b1.id]
        await store.request_cancel(b1.id)
        assert await claimable() == []
        assert len(await claimable(limit=1, agents=(AGENT, "other"))) == 1
        assert {a2.id, a3.id}.isdisjoint(await claimable())

    async def test_next_claimable_finds_queued_runs_behind_hundreds_of_running_ones(
        self, store: Store
    ) -> None:
        # However many runs are running (or waiting on a queue limit), the next eligible
        # run of any queue is found.
        for _ in range(120):
            await claim(store, await new_run(store, await conversation(store)))
        limited = QueueLimits("limited", max_running=1)
        first_limited = await new_run(store, await conversation(store), agent="limited")
        await claim(store, first_limited, limits=limited)
        for _ in range(60):  # a backlog of the limited queue, older than the run below
            await new_run(store, await conversation(store), agent="limited")
        late = await new_run(store, await conversation(store))
        found = await store.next_claimable(
            agents=[AGENT, "limited"], limits=[limited], limit=5
        )
        assert ids(found) == [late.id]

    async def test_claim_next_dequeues_heads_oldest_first_once(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        a, b = await conversation(store), await conversation(store)
        a1, a2 = await new_run(store, a), await new_run(store, a)
        b1 = await new_run(store, b)
        other = await new_run(store, await conversation(store), agent="other")
        take = dict(owner="w1", lease_seconds=LEASE, now=1000.0)
        got = await store.claim_next(turn_timeouts={AGENT: 60.0}, **take)  # type: ignore[arg-type]
        assert got is not None
        lease, run = got
        assert (run.id, run.status, run.owner, run.epoch) == (a1.id, "running", "w1", 1)
        assert lease == Lease(a1.id, "w1", 1) and run.deadline_at == pytest.approx(1060.0)
        got = await store.claim_next(turn_timeouts={AGENT: None}, **take)  # type: ignore[arg-type]
        assert got is not None and got[1].id == b1.id  # a2 waits behind a1
        assert got[1].deadline_at is None
        assert await store.claim_next(turn_timeouts={AGENT: 60.0}, **take) is None  # type: ignore[arg-type]
        assert await store.claim_next(turn_timeouts={}, **take) is None  # type: ignore[arg-type]
        # A released run is dequeued again, and says so by its epoch.
        await store.release(lease)
        again = await store.claim_next(turn_timeouts={AGENT: 60.0}, **take)  # type: ignore[arg-type]
        assert again is not None and again[1].id == a1.id and again[1].epoch == 2
        assert a2.id and other.id

    async def test_concurrent_claim_next_never_hands_one_run_to_two(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        for _ in range(40):
            await new_run(store, await conversation(store))
        async with store_factory() as second:
            async def drain(s: Store, owner: str) -> list[str]:
                taken: list[str] = []
                while (got := await s.claim_next(
                    owner=owner, turn_timeouts={AGENT: None}, lease_seconds=LEASE, now=time.time()
                )) is not None:
                    taken.append(got[1].id)
                return taken

            first_ids, second_ids = await asyncio.gather(drain(store, "w1"), drain(second, "w2"))
        assert len(first_ids) + len(second_ids) == 40
        assert not set(first_ids) & set(second_ids)

    async def test_queue_heads_shows_the_runs_and_what_blocks_them(self, store: Store) -> None:
        a, b = await conversation(store), await conversation(store)
        a1, a2, a3 = [await new_run(store, a) for _ in range(3)]
        b1 = await new_run(store, b)
        await claim(store, a1)
        by_id = {r.id: r for r in await store.queue_heads([a3.id, b1.id, "run-nope"])}
        assert set(by_id) == {a1.id, a3.id, b1.id}  # a3 itself, a1 ahead of it, b1 itself
        assert (by_id[a1.id].status, by_id[a3.id].status) == ("running", "queued")
        assert a2.id not in by_id and await store.queue_heads([]) == []

    async def test_orphan_candidates_and_cancel_requests(self, store: Store) -> None:
        cid = await conversation(store)
        expired, here, fresh = [await new_run(store, await conversation(store)) for _ in range(3)]
        await store.claim(
            expired.id, owner="far:1/1/1", expected_epoch=0, lease_seconds=1, now=1000.0
        )
        await claim(store, here, owner="this-host/42/7")
        await claim(store, fresh, owner="far:1/2/2")
        found = ids(await store.orphan_candidates(now=time.time(), owner_prefix="this-host/"))
        assert sorted(found) == sorted([expired.id, here.id])
        await store.request_cancel(fresh.id)
        flagged = await store.cancel_requested([expired.id, fresh.id, "run-nope"])
        assert flagged == [fresh.id]
        assert await store.cancel_requested([]) == []
        assert cid

    async def test_create_run_can_create_its_conversation_in_the_same_write(
        self, store: Store
    ) -> None:
        cid = uid("conv")
        fresh = NewConversation(agent=AGENT, ttl_seconds=LONG_TTL, state=IDLE)
        run = await store.create_run(
            run_id=uid("run"), conversation_id=cid, tenant=TENANT, agent=AGENT,
            input={"message": "hi"}, trace_id="t" * 32, deadline_at=None,
            busy_policy="enqueue", event=event("x", 1, "run.created"), new_conversation=fresh,
        )
        record = await store.get_conversation(cid, tenant=TENANT)
        assert (record.agent, record.state, run.status) == (AGENT, IDLE, "queued")
        again = await new_run(store, cid)  # an existing conversation is kept as it is
        assert again.position > run.position
        with pytest.raises(NotFound):  # another tenant's id stays invisible
            await store.create_run(
                run_id=uid("run"), conversation_id=cid, tenant=OTHER_TENANT, agent=AGENT,
                input={}, trace_id="t" * 32, deadline_at=None, busy_policy="enqueue",
                event=event("y", 1, "run.created"), new_conversation=fresh,
            )

    # ---- claims and leases --------------------------------------------------------------

    async def test_claim_bumps_the_epoch_and_sets_the_lease(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        lease = await store.claim(
            run.id, owner="w1", expected_epoch=0, lease_seconds=30.0, now=1000.0, turn_timeout=60
        )
        assert lease == Lease(run_id=run.id, owner="w1", epoch=1)
        stored = await store.get_run(run.id)
        assert (stored.status, stored.owner, stored.epoch) == ("running", "w1", 1)
        assert stored.lease_expires_at == pytest.approx(1030.0)
        assert stored.started_at == pytest.approx(1000.0)
        assert stored.deadline_at == pytest.approx(1060.0)
        # A second claim at the old epoch loses and changes nothing.
        assert (
            await store.claim(run.id, owner="w2", expected_epoch=0, lease_seconds=30, now=1001.0)
            is None
        )
        assert await store.get_run(run.id) == stored

    async def test_takeover_keeps_start_and_deadline(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        await store.claim(
            run.id, owner="w1", expected_epoch=0, lease_seconds=30, now=1000.0, turn_timeout=60
        )
        taken = await store.claim(
            run.id, owner="w2", expected_epoch=1, lease_seconds=30, now=2000.0, turn_timeout=60
        )
        assert taken == Lease(run_id=run.id, owner="w2", epoch=2)
        stored = await store.get_run(run.id)
        assert (stored.owner, stored.epoch, stored.status) == ("w2", 2, "running")
        assert stored.started_at == pytest.approx(1000.0)
        assert stored.deadline_at == pytest.approx(1060.0)
        assert stored.lease_expires_at == pytest.approx(2030.0)
        # The old epoch can no longer take it.
        assert (
            await store.claim(run.id, owner="w3", expected_epoch=1, lease_seconds=30, now=2001.0)
            is None
        )

    async def test_a_takeover_needs_an_expired_lease_or_a_dead_owner(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        await store.claim(run.id, owner="w1", expected_epoch=0, lease_seconds=30, now=1000.0)
        take = dict(owner="w2", expected_epoch=1, lease_seconds=30)
        # Checked inside the claim's transaction: a live lease is not taken...
        assert await store.claim(run.id, **take, now=1010.0) is None  # type: ignore[arg-type]
        assert await store.claim(  # type: ignore[arg-type]
            run.id, **take, now=1010.0, dead_owner="someone-else"
        ) is None
        # ...and a renewal that lands before the takeover wins the race.
        lease = Lease(run.id, "w1", 1)
        await store.renew_lease(lease, lease_seconds=30, now=1025.0)
        assert await store.claim(run.id, **take, now=1040.0) is None  # type: ignore[arg-type]
        assert (await store.get_run(run.id)).owner == "w1"
        # A proved-dead owner is taken over at once; an expired lease by anyone.
        taken = await store.claim(run.id, **take, now=1041.0, dead_owner="w1")  # type: ignore[arg-type]
        assert taken is not None and taken.epoch == 2
        again = await store.claim(  # type: ignore[arg-type]
            run.id, owner="w3", expected_epoch=2, lease_seconds=30, now=1072.0
        )
        assert again is not None and again.epoch == 3

    async def test_renew_leases_renews_many_and_reports_lost_and_cancelled(
        self, store: Store
    ) -> None:
        leases = [(await running_run(store))[2] for _ in range(3)]
        await store.request_cancel(leases[1].run_id)
        await store.claim(  # the third is taken over (its lease expired meanwhile)
            leases[2].run_id, owner="w9", expected_epoch=1, lease_seconds=30,
            now=time.time() + 60,
        )
        outcome = await store.renew_leases(leases, lease_seconds=500.0, now=time.time())
        assert outcome == {leases[0].run_id: False, leases[1].run_id: True, leases[2].run_id: None}
        stored = await store.get_run(leases[0].run_id)
        assert stored.lease_expires_at is not None
        assert stored.lease_expires_at > time.time() + 400
        assert await store.renew_leases([], lease_seconds=1, now=1) == {}

    async def test_a_state_change_rides_with_a_step_or_an_events_write(
        self, store: Store
    ) -> None:
        cid, _run, lease = await running_run(store)
        await store.record_step(
            lease, step(lease, 1), [event(lease.run_id, 2)], lease_seconds=LEASE, state=WORKING
        )
        assert (await store.get_conversation(cid)).state == WORKING
        await store.append_events(lease, [], state="STREAMING_RESPONSE")
        assert (await store.get_conversation(cid)).state == "STREAMING_RESPONSE"
        await store.record_step(lease, step(lease, 2), [], lease_seconds=LEASE)
        assert (await store.get_conversation(cid)).state == "STREAMING_RESPONSE"  # unchanged
        stale = Lease(lease.run_id, lease.owner, lease.epoch - 1)
        with pytest.raises(LeaseLost):  # fenced like the rest of the write
            await store.append_events(stale, [], state=IDLE)
        assert (await store.get_conversation(cid)).state == "STREAMING_RESPONSE"

    async def test_a_preset_deadline_is_kept_by_the_first_claim(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid, deadline_at=5000.0)
        assert run.deadline_at == 5000.0
        await store.claim(
            run.id, owner="w1", expected_epoch=0, lease_seconds=30, now=1000.0, turn_timeout=60
        )
        assert (await store.get_run(run.id)).deadline_at == pytest.approx(5000.0)

    async def test_claim_of_unknown_run_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound, match="run-nope"):
            await store.claim("run-nope", owner="w", expected_epoch=0, lease_seconds=1, now=1)

    async def test_a_run_behind_another_cannot_be_claimed_until_it_ends(self, store: Store) -> None:
        cid = await conversation(store)
        first, second = await new_run(store, cid), await new_run(store, cid)
        claim_second = dict(owner="w2", expected_epoch=0, lease_seconds=30.0, now=time.time())
        assert await store.claim(second.id, **claim_second) is None  # first still queued
        lease = await claim(store, first)
        assert await store.claim(second.id, **claim_second) is None  # first running
        assert (await store.get_run(second.id)).status == "queued"
        await store.complete_run(lease, completion(), now=time.time())
        taken = await store.claim(second.id, **claim_second)
        assert taken is not None and taken.epoch == 1

    async def test_terminal_runs_cannot_be_claimed(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        await store.complete_run(lease, completion(), now=time.time())
        for epoch in (0, 1, 2):
            assert (
                await store.claim(run.id, owner="w", expected_epoch=epoch, lease_seconds=1, now=1)
                is None
            )
        assert (await store.get_run(run.id)).status == "succeeded"

    async def test_renew_lease_extends_and_reports_cancel(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        assert await store.renew_lease(lease, lease_seconds=45.0, now=5000.0) is False
        assert (await store.get_run(run.id)).lease_expires_at == pytest.approx(5045.0)
        await store.request_cancel(run.id)
        assert await store.renew_lease(lease, lease_seconds=45.0, now=6000.0) is True
        stored = await store.get_run(run.id)
        assert stored.lease_expires_at == pytest.approx(6045.0)
        assert stored.status == "running"  # a running run is flagged, not stopped

    async def test_release_puts_the_run_back_in_the_queue(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        behind = await new_run(store, cid)
        lease = await claim(store, run)
        await store.release(lease)
        stored = await store.get_run(run.id)
        assert (stored.status, stored.owner, stored.position) == ("queued", None, run.position)
        assert ids(await store.next_claimable(agents=[AGENT])) == [run.id]
        # The released lease is dead.
        with pytest.raises(LeaseLost):
            await store.record_step(lease, step(lease, 1), [], lease_seconds=LEASE)
        assert await store.load_steps(run.id) == {}
        # The run behind it still waits; the released one is claimed again at a new epoch.
        assert (
            await store.claim(behind.id, owner="w2", expected_epoch=0, lease_seconds=1, now=1)
            is None
        )
        again = await claim(store, run, owner="w2")
        assert again.epoch == lease.epoch + 1

    # ---- fencing ------------------------------------------------------------------------

    async def _taken_over(self, store: Store) -> tuple[str, RunRecord, Lease, Lease]:
        cid, run, stale = await running_run(store)
        await store.record_step(stale, step(stale, 1), [event(run.id, 2)], lease_seconds=LEASE)
        await store.save_attempt(stale, 2, {"attempt": 1, "by": "stale"})
        fresh = await store.claim(
            run.id,
            owner="w2",
            expected_epoch=stale.epoch,
            lease_seconds=LEASE,
            now=time.time(),
            dead_owner=stale.owner,
        )
        assert fresh is not None and fresh.epoch == stale.epoch + 1
        return cid, run, stale, fresh

    async def _snapshot(self, store: Store, cid: str, run_id: str) -> tuple[Any, ...]:
        return (
            await store.get_conversation(cid),
            await store.history(cid),
            await store.get_run(run_id),
            await store.load_steps(run_id),
            await store.read_events(run_id),
            await store.last_event_seq(run_id),
            await store.load_attempt(run_id, 1),
            await store.load_attempt(run_id, 2),
        )

    @pytest.mark.parametrize(
        "write",
        [
            "record_step",
            "append_events",
            "set_conversation_state",
            "complete_run",
            "renew_lease",
            "release",
            "save_attempt",
        ],
    )
    async def test_a_stale_lease_is_refused_and_leaves_no_trace(
        self, store: Store, write: str
    ) -> None:
        cid, run, stale, fresh = await self._taken_over(store)
        before = await self._snapshot(store, cid, run.id)
        ops = {
            "record_step": lambda: store.record_step(
                stale, step(stale, 2), [event(run.id, 3)], lease_seconds=999.0
            ),
            "append_events": lambda: store.append_events(stale, [event(run.id, 3)]),
            "set_conversation_state": lambda: store.set_conversation_state(
                stale, cid, IDLE, WORKING, [event(run.id, 3)]
            ),
            "complete_run": lambda: store.complete_run(
                stale,
                completion(
                    messages=[{"role": "assistant", "content": "forked"}],
                    state=WORKING,
                    events=[event(run.id, 3)],
                ),
                now=time.time() + 1000,
            ),
            "renew_lease": lambda: store.renew_lease(
                stale, lease_seconds=999.0, now=time.time() + 1000
            ),
            "release": lambda: store.release(stale),
            "save_attempt": lambda: store.save_attempt(stale, 2, {"attempt": 2, "by": "stale"}),
        }
        with pytest.raises(LeaseLost):
            await ops[write]()
        assert await self._snapshot(store, cid, run.id) == before
        # The current owner is unaffected and can still write.
        await store.record_step(fresh, step(fresh, 2), [event(run.id, 3)], lease_seconds=LEASE)
        assert sorted(await store.load_steps(run.id)) == [1, 2]

    async def test_writes_after_completion_are_refused(self, store: Store) -> None:
        cid, run, lease = await running_run(store)
        await store.complete_run(
            lease, completion(messages=[{"role": "assistant", "content": "once"}]), now=time.time()
        )
        before = await self._snapshot(store, cid, run.id)
        with pytest.raises(LeaseLost):
            await store.complete_run(
                lease,
                completion(messages=[{"role": "assistant", "content": "twice"}]),
                now=time.time(),
            )
        with pytest.raises(LeaseLost):
            await store.record_step(lease, step(lease, 1), [], lease_seconds=LEASE)
        with pytest.raises(LeaseLost):
            await store.append_events(lease, [event(run.id, 9)])
        with pytest.raises(LeaseLost):
            await store.renew_lease(lease, lease_seconds=LEASE, now=time.time())
        with pytest.raises(LeaseLost):
            await store.save_attempt(lease, 1, {"attempt": 1})
        assert await self._snapshot(store, cid, run.id) == before
        assert await store.history(cid) == [{"role": "assistant", "content": "once"}]

    # ---- journal ------------------------------------------------------------------------

    async def test_record_step_and_load_steps_round_trip(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        ok = step(lease, 1, "chat gpt-x", result='{"text": "héllo", "n": [1, 2]}')
        failed = step(
            lease,
            2,
            "execute_tool search",
            status="error",
            result=None,
            error='{"type": "ValueError", "message": "bad"}',
            idempotency_key="custom-key",
        )
        await store.record_step(lease, ok, [event(run.id, 2)], lease_seconds=LEASE)
        await store.record_step(lease, failed, [], lease_seconds=LEASE)
        assert await store.load_steps(run.id) == {1: ok, 2: failed}
        assert [e.seq for e in await store.read_events(run.id)] == [1, 2]

    async def test_record_step_renews_a_lease_that_runs_low(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        now = time.time()
        lease = await claim(store, run, now=now - 28, lease_seconds=30.0)  # 2 s left
        await store.record_step(lease, step(lease, 1), [], lease_seconds=40.0)
        renewed = (await store.get_run(run.id)).lease_expires_at
        assert renewed == pytest.approx(time.time() + 40.0, abs=5)
        # Plenty left: a step does not touch the lease (its commit stays smaller).
        await store.record_step(lease, step(lease, 2), [], lease_seconds=40.0)
        assert (await store.get_run(run.id)).lease_expires_at == renewed

    async def test_a_duplicate_step_is_an_error_not_an_overwrite(self, store: Store) -> None:
        run = await new_run(store, await conversation(store))
        lease = await claim(store, run, now=time.time() - 28)  # runs low: the step renews it
        original = step(lease, 1, "model")
        await store.record_step(lease, original, [event(run.id, 2)], lease_seconds=10.0)
        renewed = (await store.get_run(run.id)).lease_expires_at
        with pytest.raises(Exception) as raised:
            await store.record_step(
                lease,
                step(lease, 1, "other", result='"changed"', finished_at=9500.0),
                [event(run.id, 3)],
                lease_seconds=10.0,
            )
        assert not isinstance(raised.value, LeaseLost)
        assert await store.load_steps(run.id) == {1: original}
        # The refused transaction wrote nothing: no event, no lease renewal.
        assert await store.last_event_seq(run.id) == 2
        assert (await store.get_run(run.id)).lease_expires_at == renewed

    async def test_several_steps_and_the_completion_carry_lazy_records(
        self, store: Store
    ) -> None:
        cid, run, lease = await running_run(store)
        await store.record_steps(
            lease, [step(lease, 1), step(lease, 2, "tool")], [event(run.id, 2)], lease_seconds=LEASE
        )
        await store.record_steps(lease, [], [event(run.id, 3)], lease_seconds=LEASE)  # a flush
        done = completion(events=[event(run.id, 4)])
        done.steps = [step(lease, 3, "model")]
        await store.complete_run(lease, done, now=time.time())
        assert sorted(await store.load_steps(run.id)) == [1, 2, 3]
        assert [e.seq for e in await store.read_events(run.id)] == [1, 2, 3, 4]
        with pytest.raises(LeaseLost):  # fenced like every write
            await store.record_steps(lease, [step(lease, 4)], [], lease_seconds=LEASE)
        assert cid

    async def test_load_turn_reads_what_an_executor_needs(self, store: Store) -> None:
        cid, run, lease = await running_run(store)
        await store.record_steps(lease, [step(lease, 1)], [event(run.id, 2)], lease_seconds=LEASE)
        turn = await store.load_turn(run.id)
        assert turn.run == await store.get_run(run.id)
        assert turn.conversation == await store.get_conversation(cid)
        assert turn.steps == await store.load_steps(run.id) and list(turn.steps) == [1]
        assert turn.last_event_seq == 2
        with pytest.raises(NotFound):
            await store.load_turn("run-nope")

    async def test_steps_are_per_run(self, store: Store) -> None:
        _, run_a, lease_a = await running_run(store)
        _, run_b, lease_b = await running_run(store)
        await store.record_step(lease_a, step(lease_a, 1), [], lease_seconds=LEASE)
        await store.record_step(lease_b, step(lease_b, 1), [], lease_seconds=LEASE)
        assert (await store.load_steps(run_a.id))[1].run_id == run_a.id
        assert (await store.load_steps(run_b.id))[1].run_id == run_b.id

    # ---- events -------------------------------------------------------------------------

    async def test_events_round_trip_in_order_and_filter_by_seq(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        rich = event(
            run.id,
            2,
            "step.finished",
            name="execute_tool search",
            parent_span_id="p" * 16,
            end=1_700_000_009.5,
            latency_ms=7.25,
            status="error",
            attributes={"error.type": "ValueError", "tokens": 3, "tags": ["a", "é"], "x": None},
        )
        await store.append_events(lease, [rich, event(run.id, 3)])
        await store.append_events(lease, [event(run.id, 4), event(run.id, 5)])
        await store.append_events(lease, [])  # nothing to do is fine
        events = await store.read_events(run.id)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[1] == rich
        assert events[0].type == "run.created" and events[0].attributes == {}
        assert [e.seq for e in await store.read_events(run.id, after_seq=3)] == [4, 5]
        assert await store.read_events(run.id, after_seq=5) == []
        assert await store.last_event_seq(run.id) == 5
        # Another run's events are separate.
        _, other, other_lease = await running_run(store)
        await store.append_events(other_lease, [event(other.id, 2)])
        assert await store.last_event_seq(other.id) == 2
        assert {e.run_id for e in await store.read_events(run.id)} == {run.id}

    async def test_a_duplicate_event_seq_is_refused_whole(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        await store.append_events(lease, [event(run.id, 2)])
        with pytest.raises(Exception) as raised:
            await store.append_events(lease, [event(run.id, 3), event(run.id, 2, "dup")])
        assert not isinstance(raised.value, LeaseLost)
        events = await store.read_events(run.id)
        assert [(e.seq, e.type) for e in events] == [(1, "run.created"), (2, "test.event")]

    # ---- completion ---------------------------------------------------------------------

    async def test_complete_run_appends_history_once_and_updates_the_conversation(
        self, store: Store
    ) -> None:
        cid = await store.ensure_conversation(
            uid("conv"), tenant=TENANT, agent=AGENT, ttl_seconds=600.0, state=IDLE
        )
        turn1 = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "name": "f"}]},
            {"role": "tool", "tool_call_id": "1", "content": "42"},
            {"role": "assistant", "content": "the answer is 42"},
        ]
        turn2 = [{"role": "user", "content": "thanks"}, {"role": "assistant", "content": "np"}]
        run1 = await new_run(store, cid.id)
        run2 = await new_run(store, cid.id)
        lease1 = await claim(store, run1)
        await store.complete_run(
            lease1,
            completion(messages=turn1, state=IDLE, events=[event(run1.id, 2, "run.finished")]),
            now=50_000.0,
        )
        conv = await store.get_conversation(cid.id)
        assert (conv.version, conv.message_count, conv.state) == (1, 4, IDLE)
        assert conv.updated_at == pytest.approx(50_000.0)
        assert conv.expires_at == pytest.approx(50_600.0)
        assert await store.history(cid.id) == turn1
        done = await store.get_run(run1.id)
        assert (done.status, done.result, done.error) == ("succeeded", {"answer": "done"}, None)
        assert done.finished_at == pytest.approx(50_000.0)
        assert [e.type for e in await store.read_events(run1.id)] == ["run.created", "run.finished"]

        lease2 = await claim(store, run2)
        await store.complete_run(lease2, completion(messages=turn2, state=WORKING), now=60_000.0)
        conv = await store.get_conversation(cid.id)
        assert (conv.version, conv.message_count, conv.state) == (2, 6, WORKING)
        assert conv.expires_at == pytest.approx(60_600.0)
        assert await store.history(cid.id) == turn1 + turn2

    async def test_a_failed_run_records_its_error_and_adds_no_history(self, store: Store) -> None:
        cid, run, lease = await running_run(store)
        await store.complete_run(lease, completion("failed"), now=time.time())
        failed = await store.get_run(run.id)
        assert failed.status == "failed" and failed.terminal
        assert failed.error == {"type": "Boom", "message": "it broke"}
        assert failed.result is None
        assert await store.history(cid) == []
        assert (await store.get_conversation(cid)).message_count == 0

    # ---- cancellation -------------------------------------------------------------------

    async def test_cancel_a_queued_run(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        behind = await new_run(store, cid)
        cancelled = await store.request_cancel(run.id, tenant=TENANT)
        assert cancelled.status == "cancelled" and cancelled.cancel_requested
        stored = await store.get_run(run.id)
        assert stored.status == "cancelled" and stored.terminal
        assert stored.finished_at is not None
        assert (
            await store.claim(run.id, owner="w", expected_epoch=0, lease_seconds=1, now=1) is None
        )
        # The next run of the conversation moves to the head.
        assert ids(await store.next_claimable(agents=[AGENT])) == [behind.id]
        assert (await claim(store, behind)).epoch == 1

    async def test_cancel_a_running_run_flags_it(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        flagged = await store.request_cancel(run.id)
        assert flagged.status == "running" and flagged.cancel_requested
        stored = await store.get_run(run.id)
        assert stored.status == "running" and stored.cancel_requested
        assert await store.renew_lease(lease, lease_seconds=LEASE, now=time.time()) is True

    async def test_cancel_a_finished_run_changes_nothing(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        await store.complete_run(lease, completion(), now=time.time())
        before = await store.get_run(run.id)
        after = await store.request_cancel(run.id)
        assert after.status == "succeeded"
        assert (await store.get_run(run.id)).status == before.status == "succeeded"

    async def test_cancel_unknown_or_foreign_run_is_not_found(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        with pytest.raises(NotFound, match="run-nope"):
            await store.request_cancel("run-nope")
        with pytest.raises(NotFound, match=run.id):
            await store.request_cancel(run.id, tenant=OTHER_TENANT)
        stored = await store.get_run(run.id)
        assert stored.status == "queued" and not stored.cancel_requested

    async def test_get_run_of_another_tenant_is_not_found(self, store: Store) -> None:
        cid = await conversation(store)
        run = await new_run(store, cid)
        assert (await store.get_run(run.id, tenant=TENANT)).id == run.id
        with pytest.raises(NotFound, match=run.id):
            await store.get_run(run.id, tenant=OTHER_TENANT)

    # ---- side effects -------------------------------------------------------------------

    async def test_record_effect_inserts_once(self, store: Store) -> None:
        cid, run, _ = await running_run(store)
        first = EffectRecord("send:1", "email", run.id, cid, TENANT, {"to": "a@b.c"}, 10.0)
        assert await store.record_effect(first) is True
        again = EffectRecord("send:1", "sms", "other-run", "other-conv", TENANT, {"x": 1}, 11.0)
        assert await store.record_effect(again) is False
        assert await store.list_effects() == [first]

    async def test_list_effects_filters(self, store: Store) -> None:
        a, b = await conversation(store), await conversation(store)
        effects = [
            EffectRecord("k1", "email", "r1", a, TENANT, {"n": 1}, 1.0),
            EffectRecord("k2", "charge", "r1", a, TENANT, {"n": 2}, 2.0),
            EffectRecord("k3", "email", "r2", b, TENANT, {"n": 3}, 3.0),
        ]
        for effect in effects:
            assert await store.record_effect(effect)
        assert await store.list_effects() == effects
        assert await store.list_effects(conversation_id=a) == effects[:2]
        assert await store.list_effects(kind="email") == [effects[0], effects[2]]
        assert await store.list_effects(conversation_id=a, kind="email") == [effects[0]]
        assert await store.list_effects(conversation_id="nope") == []

    # ---- retention ----------------------------------------------------------------------

    async def test_purge_expired_deletes_only_idle_expired_conversations(
        self, store: Store
    ) -> None:
        now = time.time()
        expired = await conversation(store, ttl=60.0)
        runs = [await new_run(store, expired) for _ in range(2)]
        for run in runs:
            lease = await claim(store, run)
            await store.record_step(lease, step(lease, 1), [event(run.id, 2)], lease_seconds=LEASE)
            await store.record_effect(
                EffectRecord(f"fx-{run.id}", "email", run.id, expired, TENANT, {}, now)
            )
            await store.complete_run(
                lease,
                completion(
                    messages=[{"role": "user", "content": run.id}], events=[event(run.id, 3)]
                ),
                now=now,
            )
        busy_queued = await conversation(store, ttl=60.0)
        await new_run(store, busy_queued)
        busy_running, _, _ = await running_run(store, await conversation(store, ttl=60.0))
        alive = await conversation(store)
        alive_run = await new_run(store, alive)
        await store.record_effect(EffectRecord("fx-alive", "email", "r", alive, TENANT, {}, now))

        report = await store.purge_expired(now=now + 3600)
        assert (report.conversations, report.runs, report.events) == (1, 2, 6)

        with pytest.raises(NotFound):
            await store.get_conversation(expired)
        for run in runs:
            with pytest.raises(NotFound):
                await store.get_run(run.id)
            assert await store.load_steps(run.id) == {}
            assert await store.read_events(run.id) == []
            assert await store.last_event_seq(run.id) == 0
        assert await store.history(expired) == []
        assert await store.list_effects(conversation_id=expired) == []
        # Everything else is intact.
        for kept in (busy_queued, busy_running, alive):
            assert (await store.get_conversation(kept)).id == kept
        assert (await store.get_run(alive_run.id)).status == "queued"
        assert [e.idempotency_key for e in await store.list_effects()] == ["fx-alive"]
        # Nothing left to purge.
        again = await store.purge_expired(now=now + 3600)
        assert (again.conversations, again.runs, again.events) == (0, 0, 0)

    async def test_purge_respects_expiry(self, store: Store) -> None:
        now = time.time()
        cid = await conversation(store, ttl=600.0)
        report = await store.purge_expired(now=now)
        assert report.conversations == 0
        assert (await store.get_conversation(cid)).id == cid

    # ---- closing, and conversations that expired ------------------------------------------

    async def test_a_closed_conversation_refuses_runs_and_keeps_its_history(
        self, store: Store
    ) -> None:
        cid, run, lease = await running_run(store)
        await store.complete_run(
            lease, completion(messages=[{"role": "user", "content": "hi"}]), now=time.time()
        )
        before = await store.get_conversation(cid)
        closed = await store.close_conversation(cid, tenant=TENANT, now=before.updated_at + 1)
        assert closed.state == "CLOSED" and closed.updated_at == before.updated_at + 1
        assert (closed.version, closed.message_count, closed.expires_at) == (
            before.version,
            before.message_count,
            before.expires_at,
        )
        assert await store.get_conversation(cid) == closed
        for policy in ("enqueue", "reject", "interrupt"):
            with pytest.raises(ConversationClosed, match=cid):
                await new_run(store, cid, busy_policy=policy)
        # Also when the run would have created it: the id is taken by the closed one.
        with pytest.raises(ConversationClosed):
            await store.create_run(
                run_id=uid("run"),
                conversation_id=cid,
                tenant=TENANT,
                agent=AGENT,
                input={},
                trace_id="t" * 32,
                deadline_at=None,
                busy_policy="enqueue",
                event=event("r", 1),
                new_conversation=NewConversation(agent=AGENT, ttl_seconds=60.0, state=IDLE),
            )
        assert ids(await store.list_runs(conversation_id=cid)) == [run.id]  # nothing queued
        assert await store.history(cid) == [{"role": "user", "content": "hi"}]
        assert (await store.get_run(run.id)).status == "succeeded"
        # Closing again changes nothing.
        assert await store.close_conversation(cid, now=time.time() + 50) == closed

    async def test_close_is_refused_while_a_run_is_queued_or_running(self, store: Store) -> None:
        cid = await conversation(store)
        queued = await new_run(store, cid)
        with pytest.raises(ConversationBusy, match=queued.id):
            await store.close_conversation(cid, now=time.time())
        lease = await claim(store, queued)
        with pytest.raises(ConversationBusy, match=queued.id):
            await store.close_conversation(cid, now=time.time())
        assert (await store.get_conversation(cid)).state == IDLE
        await store.complete_run(lease, completion(), now=time.time())
        assert (await store.close_conversation(cid, now=time.time())).state == "CLOSED"

    async def test_close_of_an_unknown_or_foreign_conversation_is_not_found(
        self, store: Store
    ) -> None:
        cid = await conversation(store)
        with pytest.raises(NotFound):
            await store.close_conversation(cid, tenant=OTHER_TENANT, now=time.time())
        with pytest.raises(NotFound):
            await store.close_conversation(uid("nope"), now=time.time())
        assert (await store.get_conversation(cid)).state == IDLE

    async def test_racing_runs_and_a_close_never_leave_a_run_on_a_closed_conversation(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        async with store_factory() as other:
            for _ in range(20):
                cid = await conversation(store)
                outcomes = await asyncio.gather(
                    new_run(store, cid),
                    other.close_conversation(cid, now=time.time()),
                    return_exceptions=True,
                )
                run, closed = outcomes
                state = (await store.get_conversation(cid)).state
                queued = await store.list_runs(conversation_id=cid)
                if isinstance(closed, BaseException):
                    # The run came first: the close was refused, the run stands.
                    assert isinstance(closed, ConversationBusy), closed
                    assert state == IDLE and ids(queued) == [run.id]  # type: ignore[union-attr]
                else:
                    assert isinstance(run, ConversationClosed), run
                    assert state == "CLOSED" and queued == []

    async def test_an_idle_conversation_past_its_expiry_refuses_runs_until_purged(
        self, store: Store
    ) -> None:
        # Its last turn ended an hour ago; its TTL is a minute.
        expired, _, lease = await running_run(store, await conversation(store, ttl=60.0))
        await store.complete_run(lease, completion(), now=time.time() - 3600)
        with pytest.raises(ConversationExpired, match=expired):
            await new_run(store, expired)
        assert len(await store.list_runs(conversation_id=expired)) == 1  # nothing queued
        # It can still be read; the purge deletes it.
        assert (await store.get_conversation(expired)).id == expired
        report = await store.purge_expired(now=time.time())
        assert report.conversations == 1
        with pytest.raises(NotFound):
            await store.get_conversation(expired)

    async def test_a_conversation_with_a_run_in_flight_takes_runs_past_its_expiry(
        self, store: Store
    ) -> None:
        # Its expiry is refreshed when the run in flight ends: it is not expired.
        cid = await conversation(store, ttl=60.0)
        first, second = await new_run(store, cid), await new_run(store, cid)
        await store.complete_run(await claim(store, first), completion(), now=time.time() - 3600)
        assert (await store.get_conversation(cid)).expires_at < time.time()
        third = await new_run(store, cid)  # second is still queued
        lease = await claim(store, second)
        fourth = await new_run(store, cid, busy_policy="enqueue")  # second is running
        await store.complete_run(lease, completion(), now=time.time())
        record = await store.get_conversation(cid)
        assert record.state == IDLE and record.expires_at > time.time()
        assert ids(
            await store.list_runs(conversation_id=cid, status="queued", oldest_first=True)
        ) == [third.id, fourth.id]

    # ---- per-queue limits shared by every store on the database -------------------------

    async def _queue(self, store: Store, queue: str, n: int) -> list[RunRecord]:
        """n queued runs of `queue`, each heading its own conversation."""
        return [await new_run(store, await conversation(store), agent=queue) for _ in range(n)]

    async def test_max_running_refuses_starts_beyond_the_limit_until_a_run_ends(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        limits = QueueLimits("limited", max_running=2)
        runs = await self._queue(store, "limited", 4)
        other_queue = await self._queue(store, "other", 1)
        go = dict(expected_epoch=0, lease_seconds=LEASE, now=time.time(), limits=limits)
        async with store_factory() as other:
            first = await store.claim(runs[0].id, owner="a", **go)
            second = await other.claim(runs[1].id, owner="b", **go)
            assert first is not None and second is not None
            # The queue is full, whichever store asks.
            assert await store.claim(runs[2].id, owner="a", **go) is None
            assert await other.claim(runs[3].id, owner="b", **go) is None
            refused = await store.get_run(runs[2].id)
            assert (refused.status, refused.epoch, refused.owner) == ("queued", 0, None)
            # Another queue is not affected by this one's limit.
            assert (
                await other.claim(
                    other_queue[0].id,
                    owner="b",
                    expected_epoch=0,
                    lease_seconds=LEASE,
                    now=time.time(),
                    limits=QueueLimits("other", max_running=1),
                )
                is not None
            )
            # A takeover adds no running run: it is never refused by the limit.
            taken = await other.claim(
                runs[0].id, owner="c", **{**go, "expected_epoch": 1}, dead_owner="a"
            )
            assert taken == Lease(run_id=runs[0].id, owner="c", epoch=2)
            # A run that ends frees its place: the refused run starts now.
            await other.complete_run(taken, completion(), now=time.time())
            assert await store.claim(runs[2].id, owner="a", **go) is not None
            assert await other.claim(runs[3].id, owner="b", **go) is None
            # So does a released run (it is queued again, and counts again once claimed).
            await other.release(second)
            assert await store.claim(runs[3].id, owner="a", **go) is not None
            assert await other.claim(runs[1].id, owner="b", **{**go, "expected_epoch": 1}) is None
        running = [r for r in await store.list_runs() if r.status == "running"]
        assert sorted(r.agent for r in running) == ["limited", "limited", "other"]

    async def test_racing_claims_of_one_queue_never_exceed_max_running(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        limits = QueueLimits("limited", max_running=3)
        runs = await self._queue(store, "limited", 12)
        async with store_factory() as other, store_factory() as third:
            stores = [store, other, third]
            leases = await asyncio.gather(
                *(
                    stores[i % 3].claim(
                        r.id,
                        owner=f"w{i % 3}",
                        expected_epoch=0,
                        lease_seconds=LEASE,
                        now=time.time(),
                        limits=limits,
                    )
                    for i, r in enumerate(runs)
                )
            )
        assert sum(lease is not None for lease in leases) == 3
        statuses = [(await store.get_run(r.id)).status for r in runs]
        assert statuses.count("running") == 3 and statuses.count("queued") == 9

    async def test_max_per_second_is_a_token_bucket_shared_by_every_store(
        self, store: Store, store_factory: Callable[[], Store]
    ) -> None:
        limits = QueueLimits("metered", max_per_second=2.0, burst=2)
        runs = await self._queue(store, "metered", 6)
        unmetered = await self._queue(store, "free", 1)

        async def start(s: Store, run: RunRecord, now: float) -> bool:
            lease = await s.claim(
                run.id, owner="w", expected_epoch=0, lease_seconds=LEASE, now=now, limits=limits
            )
            return lease is not None

        async with store_factory() as other:
            # A full bucket: a burst of 2, then nothing until tokens refill at 2 per second.
            assert await start(store, runs[0], 1000.0)
            assert await start(other, runs[1], 1000.0)
            assert not await start(store, runs[2], 1000.0)
            assert not await start(other, runs[2], 1000.2)  # 0.4 of a token
            assert (await store.get_run(runs[2].id)).status == "queued"
            assert await start(other, runs[2], 1000.6)  # 1.2 tokens: one start
            assert not await start(store, runs[3], 1000.7)  # 0.4 left
            # The bucket holds at most `burst` tokens, however long it was idle.
            assert await start(store, runs[3], 5000.0)
            assert await start(other, runs[4], 5000.0)
            assert not await start(store, runs[5], 5000.0)
            # Other queues are not metered by it.
            assert (
                await other.claim(
                    unmetered[0].id, owner="w", expected_epoch=0, lease_seconds=LEASE, now=5000.0
                )
                is not None
            )
        statuses = [(await store.get_run(r.id)).status for r in runs]
        assert statuses == ["running"] * 5 + ["queued"]

    async def test_both_limits_together_and_a_refusal_takes_no_token(self, store: Store) -> None:
        limits = QueueLimits("both", max_running=1, max_per_second=1.0, burst=1)
        runs = await self._queue(store, "both", 3)
        go = dict(owner="w", expected_epoch=0, lease_seconds=LEASE, limits=limits)
        lease = await store.claim(runs[0].id, now=1000.0, **go)
        assert lease is not None
        # Full (1 running): refused, and the refusal spends no token ...
        assert await store.claim(runs[1].id, now=1002.0, **go) is None
        await store.complete_run(lease, completion(), now=1002.0)
        # ... so once the running run ended, the start at 1002 finds a token.
        assert await store.claim(runs[1].id, now=1002.0, **go) is not None

    async def test_limits_of_another_queue_are_an_error(self, store: Store) -> None:
        run = (await self._queue(store, "mine", 1))[0]
        with pytest.raises(ValueError, match="theirs"):
            await store.claim(
                run.id,
                owner="w",
                expected_epoch=0,
                lease_seconds=LEASE,
                now=time.time(),
                limits=QueueLimits("theirs", max_running=5),
            )
        assert (await store.get_run(run.id)).status == "queued"

    # ---- breakers -----------------------------------------------------------------------

    async def test_breaker_compare_and_set(self, store: Store) -> None:
        assert await store.breaker_load("model:gpt") == (None, 0)
        assert await store.list_breakers() == []
        assert await store.breaker_save_if("model:gpt", 0, {"state": "closed", "n": 1}) is True
        assert await store.breaker_load("model:gpt") == ({"state": "closed", "n": 1}, 1)
        # A second "insert" at version 0 conflicts.
        assert await store.breaker_save_if("model:gpt", 0, {"state": "open"}) is False
        assert await store.breaker_save_if("model:gpt", 1, {"state": "open"}) is True
        assert await store.breaker_load("model:gpt") == ({"state": "open"}, 2)
        # A stale version conflicts and changes nothing.
        assert await store.breaker_save_if("model:gpt", 1, {"state": "half_open"}) is False
        assert await store.breaker_save_if("model:gpt", 5, {"state": "half_open"}) is False
        assert await store.breaker_load("model:gpt") == ({"state": "open"}, 2)
        # Saving at a version for an unknown breaker conflicts too.
        assert await store.breaker_save_if("tool:x", 3, {"state": "open"}) is False
        assert await store.breaker_save_if("tool:x", 0, {"state": "open"}) is True
        assert await store.list_breakers() == [
            ("model:gpt", {"state": "open"}, 2),
            ("tool:x", {"state": "open"}, 1),
        ]

    # ---- cached answers -----------------------------------------------------------------

    async def test_cache_put_get_replace_and_prune(self, store: Store) -> None:
        assert await store.cache_get("model:m:abc") is None
        await store.cache_put("model:m:abc", {"answer": "first"})
        await store.cache_put("model:m:def", {"answer": "other"})
        assert await store.cache_get("model:m:abc") == {"answer": "first"}
        await store.cache_put("model:m:abc", {"answer": "second"})
        assert await store.cache_get("model:m:abc") == {"answer": "second"}
        assert await store.cache_prune(older_than=time.time() - 3600) == 0
        assert await store.cache_prune(older_than=time.time() + 1) == 2
        assert await store.cache_get("model:m:abc") is None

    # ---- journaled retry attempts -------------------------------------------------------

    async def test_attempt_state_round_trips_and_is_replaced_per_step(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        _cid2, other_run, other_lease = await running_run(store)
        assert await store.load_attempt(run.id, 1) is None
        first = {
            "attempt": 1,
            "next_attempt_at": 1_700_000_000.125,
            "first_attempt_at": 1_699_999_999.5,
            "pipeline": "openai:gpt-4o",
            "nested": {"é": [1, None, 2.5]},
        }
        await store.save_attempt(lease, 1, first)
        assert await store.load_attempt(run.id, 1) == first
        # Saving again replaces the state: one row per step, never a history of them.
        second = {**first, "attempt": 2, "next_attempt_at": None}
        await store.save_attempt(lease, 1, second)
        assert await store.load_attempt(run.id, 1) == second
        # Addressed by (run, seq): other steps and other runs are untouched.
        assert await store.load_attempt(run.id, 2) is None
        assert await store.load_attempt(other_run.id, 1) is None
        await store.save_attempt(other_lease, 1, {"attempt": 7})
        await store.save_attempt(lease, 3, {"attempt": 3})
        assert await store.load_attempt(run.id, 1) == second
        assert await store.load_attempt(run.id, 3) == {"attempt": 3}
        assert await store.load_attempt(other_run.id, 1) == {"attempt": 7}
        assert await store.load_attempt("no-such-run", 1) is None

    async def test_a_new_owner_reads_and_continues_the_previous_owners_attempts(
        self, store: Store
    ) -> None:
        _cid, run, stale, fresh = await self._taken_over(store)
        # The state the dead owner saved is what the new owner resumes from.
        assert await store.load_attempt(run.id, 2) == {"attempt": 1, "by": "stale"}
        await store.save_attempt(fresh, 2, {"attempt": 2, "by": "fresh"})
        with pytest.raises(LeaseLost):
            await store.save_attempt(stale, 2, {"attempt": 9, "by": "stale"})
        assert await store.load_attempt(run.id, 2) == {"attempt": 2, "by": "fresh"}

    async def test_save_attempt_on_a_queued_or_unknown_run_is_refused(self, store: Store) -> None:
        cid = await conversation(store)
        queued = await new_run(store, cid)
        with pytest.raises(LeaseLost):
            await store.save_attempt(Lease(queued.id, "w1", 0), 1, {"attempt": 1})
        with pytest.raises(LeaseLost):
            await store.save_attempt(Lease("no-such-run", "w1", 1), 1, {"attempt": 1})
        assert await store.load_attempt(queued.id, 1) is None
        assert await store.load_attempt("no-such-run", 1) is None

    async def test_purge_deletes_the_attempts_of_purged_runs_only(self, store: Store) -> None:
        now = time.time()
        expired = await conversation(store, ttl=60.0)
        done = await new_run(store, expired)
        lease = await claim(store, done)
        await store.save_attempt(lease, 1, {"attempt": 2})
        await store.save_attempt(lease, 4, {"attempt": 1})
        await store.complete_run(lease, completion(), now=now)
        alive = await conversation(store)
        _, kept_run, kept_lease = await running_run(store, alive)
        await store.save_attempt(kept_lease, 1, {"attempt": 3})
        # Expired, but its run is still running: nothing of it is purged.
        busy = await conversation(store, ttl=60.0)
        _, busy_run, busy_lease = await running_run(store, busy)
        await store.save_attempt(busy_lease, 1, {"attempt": 1})

        report = await store.purge_expired(now=now + 3600)
        assert (report.conversations, report.runs) == (1, 1)
        assert await store.load_attempt(done.id, 1) is None
        assert await store.load_attempt(done.id, 4) is None
        assert await store.load_attempt(kept_run.id, 1) == {"attempt": 3}
        assert await store.load_attempt(busy_run.id, 1) == {"attempt": 1}

    # ---- paged reads ----------------------------------------------------------------------

    async def _long_conversation(self, store: Store, turns: int) -> tuple[str, list[RunRecord]]:
        """A conversation of `turns` completed turns of 2 messages each (user, assistant)."""
        cid = await conversation(store)
        runs = []
        for turn in range(turns):
            run = await new_run(store, cid)
            lease = await claim(store, run)
            messages = [
                {"role": "user", "content": f"question {turn}"},
                {"role": "assistant", "content": f"answer {turn}"},
            ]
            await store.complete_run(lease, completion(messages=messages), now=time.time())
            runs.append(run)
        return cid, runs

    async def test_history_pages_forward_backward_and_between_through_message_indexes(
        self, store: Store
    ) -> None:
        cid, runs = await self._long_conversation(store, 120)
        whole = await store.history(cid)
        assert len(whole) == 240

        def contents(page: list[MessageRecord]) -> list[Any]:
            return [m.body["content"] for m in page]

        everything = await store.history_page(cid, limit=None)
        assert [m.index for m in everything] == list(range(240))
        assert [m.body for m in everything] == whole
        assert [m.run_id for m in everything[:4]] == [runs[0].id] * 2 + [runs[1].id] * 2
        # Without a cursor: the newest messages, oldest first.
        newest = await store.history_page(cid, limit=3)
        assert [m.index for m in newest] == [237, 238, 239]
        assert contents(newest) == ["answer 118", "question 119", "answer 119"]
        # Paging back from the newest visits every message once.
        seen: list[int] = []
        before: int | None = None
        while True:
            page = await store.history_page(cid, before=before, limit=50)
            if not page:
                break
            assert [m.index for m in page] == sorted(m.index for m in page)
            seen = [m.index for m in page] + seen
            before = page[0].index
        assert seen == list(range(240))
        # Paging forward from the start too.
        seen, after = [], -1
        while page := await store.history_page(cid, after=after, limit=70):
            seen += [m.index for m in page]
            after = page[-1].index
        assert seen == list(range(240))
        assert contents(await store.history_page(cid, after=0, limit=2)) == [
            "answer 0",
            "question 1",
        ]

        # Both cursors: a window, from its start when paging forward, else from its end.
        async def indexes(**page: Any) -> list[int]:
            return [m.index for m in await store.history_page(cid, **page)]

        assert await indexes(after=10, before=20, limit=3) == [11, 12, 13]
        assert await indexes(after=10, before=14, limit=None) == [11, 12, 13]
        assert await indexes(before=20, limit=3) == [17, 18, 19]
        assert await store.history_page(cid, after=239, limit=10) == []
        assert await store.history_page(cid, before=0, limit=10) == []
        assert await store.history_page(cid, limit=0) == []
        assert await store.history_page("conv-nope", limit=10) == []
        with pytest.raises(ValueError, match="limit"):
            await store.history_page(cid, limit=-1)

    async def test_read_events_pages_by_seq_at_any_size(self, store: Store) -> None:
        _cid, run, lease = await running_run(store)
        for start in range(2, 302, 50):  # 300 more events, in 6 writes
            await store.append_events(lease, [event(run.id, s) for s in range(start, start + 50)])
        everything = await store.read_events(run.id)
        assert [e.seq for e in everything] == list(range(1, 302))
        assert await store.read_events(run.id, limit=None) == everything
        for after, limit in ((0, 1), (0, 10), (5, 64), (5, 65), (100, 150), (250, 1000), (0, 301)):
            page = await store.read_events(run.id, after_seq=after, limit=limit)
            assert page == everything[after : after + limit], (after, limit)
        assert await store.read_events(run.id, after_seq=120) == everything[120:]
        assert await store.read_events(run.id, after_seq=301, limit=5) == []
        assert await store.read_events(run.id, limit=0) == []
        with pytest.raises(ValueError, match="limit"):
            await store.read_events(run.id, limit=-5)

    async def test_read_events_of_several_runs_in_one_read(self, store: Store) -> None:
        _, a, lease_a = await running_run(store)
        _, b, lease_b = await running_run(store)
        await store.append_events(lease_a, [event(a.id, s) for s in range(2, 200)])
        await store.append_events(lease_b, [event(b.id, 2, "other")])
        got = await store.read_events_of([b.id, a.id, "run-nope", a.id])
        assert list(got) == [b.id, a.id, "run-nope"]
        assert got[a.id] == await store.read_events(a.id)
        assert [(e.seq, e.type) for e in got[b.id]] == [(1, "run.created"), (2, "other")]
        assert got["run-nope"] == []
        assert await store.read_events_of([]) == {}

    async def test_list_runs_pages_by_position_and_filters_by_status_and_agent(
        self, store: Store
    ) -> None:
        cid, done = await self._long_conversation(store, 30)
        other = await conversation(store)
        queued = [await new_run(store, other, agent="billing") for _ in range(5)]
        failing = await new_run(store, cid)
        await store.complete_run(await claim(store, failing), completion("failed"), now=1.0)
        newest_first = [failing, *reversed(queued), *reversed(done)]
        assert ids(await store.list_runs(limit=100)) == ids(newest_first)
        # Back from the newest, page by page.
        seen: list[str] = []
        before: int | None = None
        while page := await store.list_runs(limit=7, before_position=before):
            seen += ids(page)
            before = page[-1].position
        assert seen == ids(newest_first)
        # Forward from the oldest.
        seen, after = [], 0
        while page := await store.list_runs(limit=8, after_position=after, oldest_first=True):
            assert [r.position for r in page] == sorted(r.position for r in page)
            seen += ids(page)
            after = page[-1].position
        assert seen == ids(list(reversed(newest_first)))
        # Both cursors: the runs strictly between.
        middle = await store.list_runs(
            before_position=done[10].position, after_position=done[6].position
        )
        assert ids(middle) == ids(list(reversed(done[7:10])))
        # Filters, combined with paging and with each other.
        conv_runs = await store.list_runs(conversation_id=cid, limit=10)
        assert ids(conv_runs) == ids([failing, *reversed(done)][:10])
        assert ids(await store.list_runs(status="failed")) == [failing.id]
        assert ids(await store.list_runs(status=["queued", "failed"], limit=3)) == ids(
            [failing, *reversed(queued)][:3]
        )
        assert await store.list_runs(status=[]) == []
        assert ids(await store.list_runs(agent="billing", oldest_first=True)) == ids(queued)
        assert ids(
            await store.list_runs(
                agent="billing", status="queued", before_position=queued[2].position
            )
        ) == ids([queued[1], queued[0]])
        assert await store.list_runs(agent="billing", status="succeeded") == []
        assert await store.list_runs(limit=0) == []
        with pytest.raises(ValueError, match="limit"):
            await store.list_runs(limit=-1)

    # ---- context windows and summaries ----------------------------------------------------

    async def _long_history(self, store: Store, turns: int) -> tuple[str, list[str]]:
        """A conversation of `turns` completed turns of two messages each (c0, c1, ...)."""
        cid = await conversation(store)
        for turn in range(turns):
            lease = await claim(store, await new_run(store, cid))
            messages = [{"role": "user", "content": f"c{2 * turn}"}]
            messages.append({"role": "assistant", "content": f"c{2 * turn + 1}"})
            await store.complete_run(lease, completion(messages=messages), now=time.time())
        return cid, [f"c{i}" for i in range(2 * turns)]

    async def test_history_tail_reads_the_newest_messages_between_bounds_in_order(
        self, store: Store
    ) -> None:
        cid, everything = await self._long_history(store, 60)

        def contents(records: list[MessageRecord]) -> list[str]:
            return [r.body["content"] for r in records]

        assert contents(await store.history_tail(cid, limit=5)) == everything[-5:]
        assert [r.index for r in await store.history_tail(cid, limit=3)] == [117, 118, 119]
        # `after`: still the newest ones (a window after a summary), never the oldest.
        assert contents(await store.history_tail(cid, limit=4, after=100)) == everything[-4:]
        assert contents(await store.history_tail(cid, limit=50, after=110)) == everything[111:]
        # `before`: the page before an index (reading a window backward, page by page).
        assert contents(await store.history_tail(cid, limit=4, before=30)) == everything[26:30]
        assert contents(await store.history_tail(cid, limit=4, after=27, before=30)) == (
            everything[28:30]
        )
        # A large window comes whole and in order.
        assert contents(await store.history_tail(cid, limit=1000)) == everything
        assert await store.history_tail(cid, limit=0) == []
        assert await store.history_tail("no-such-conversation", limit=10) == []

    def _summary(self, cid: str, run_id: str, label: str, first: int, last: int) -> SummaryRecord:
        return SummaryRecord(
            conversation_id=cid,
            run_id=run_id,
            label=label,
            first_index=first,
            last_index=last,
            text=f"summary of {first}..{last} by {run_id} ({label}) é",
            model="summariser",
            input_tokens=1200,
            output_tokens=80,
            created_at=1_700_000_000.25,
        )

    async def test_summaries_are_stored_once_per_run_and_label_and_pruned(
        self, store: Store
    ) -> None:
        cid, _ = await self._long_history(store, 10)
        first = await new_run(store, cid)
        lease = await claim(store, first)
        made = self._summary(cid, first.id, "round 0", 0, 9)
        assert await store.save_summary(lease, made) == made
        # The same run and label again (a resumed step): the stored one wins, unchanged.
        again = self._summary(cid, first.id, "round 0", 0, 15)
        assert await store.save_summary(lease, again) == made
        later = self._summary(cid, first.id, "round 2", 0, 13)
        await store.save_summary(lease, later)
        assert await store.load_summaries(cid) == [later, made]
        await store.complete_run(lease, completion(), now=time.time())

        # A later run's summary prunes the older ones of other runs, but keeps their
        # newest (what a resumed run of its own started from).
        second = await new_run(store, cid)
        lease2 = await claim(store, second)
        newer = self._summary(cid, second.id, "round 0", 0, 17)
        await store.save_summary(lease2, newer)
        assert await store.load_summaries(cid) == [newer, later]
        await store.complete_run(lease2, completion(), now=time.time())
        third = await new_run(store, cid)
        lease3 = await claim(store, third)
        newest = self._summary(cid, third.id, "round 0", 0, 19)
        await store.save_summary(lease3, newest)
        assert await store.load_summaries(cid) == [newest, newer]
        # Another conversation's summaries are its own.
        assert await store.load_summaries(await conversation(store)) == []

    async def test_saving_a_summary_is_fenced_and_of_the_runs_own_conversation(
        self, store: Store
    ) -> None:
        cid, run, lease = await running_run(store)
        other_cid = await conversation(store)
        with pytest.raises(ValueError, match="own conversation"):
            await store.save_summary(lease, self._summary(other_cid, run.id, "round 0", 0, 1))
        with pytest.raises(ValueError, match="own conversation"):
            await store.save_summary(lease, self._summary(cid, "run-x", "round 0", 0, 1))
        stale = Lease(run.id, "w1", lease.epoch - 1)
        with pytest.raises(LeaseLost):
            await store.save_summary(stale, self._summary(cid, run.id, "round 0", 0, 1))
        assert await store.load_summaries(cid) == []

    async def test_a_summary_can_drop_the_messages_it_covers_once(self, store: Store) -> None:
        cid, everything = await self._long_history(store, 20)
        run = await new_run(store, cid)
        lease = await claim(store, run)
        # Keep the first two (pinned), drop 2..29, keep the rest.
        await store.save_summary(lease, self._summary(cid, run.id, "round 0", 2, 29), drop=(2, 29))
        left = await store.history_page(cid, limit=None)
        assert [m.index for m in left] == [0, 1, *range(30, 40)]
        assert [m.body["content"] for m in left] == everything[:2] + everything[30:]
        # A resumed step saving the same summary drops nothing more.
        await store.save_summary(lease, self._summary(cid, run.id, "round 0", 2, 35), drop=(2, 35))
        assert len(await store.history_page(cid, limit=None)) == 12
        # The history goes on at the next index; windows and pages skip the gap.
        await store.complete_run(
            lease, completion(messages=[{"role": "user", "content": "new"}]), now=time.time()
        )
        assert [m.index for m in await store.history_tail(cid, limit=3)] == [38, 39, 40]
        assert [m.index for m in await store.history_tail(cid, limit=3, before=30)] == [0, 1]
        assert (await store.get_conversation(cid)).message_count == 41

    async def test_purge_deletes_summaries_of_purged_conversations(self, store: Store) -> None:
        now = time.time()
        expired = await conversation(store, ttl=60.0)
        alive = await conversation(store)
        for cid in (expired, alive):
            run = await new_run(store, cid)
            lease = await claim(store, run)
            await store.save_summary(lease, self._summary(cid, run.id, "round 0", 0, 0))
            await store.complete_run(lease, completion(), now=now)
        await store.purge_expired(now=now + 3600)
        assert await store.load_summaries(expired) == []
        assert len(await store.load_summaries(alive)) == 1
