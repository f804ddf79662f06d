"""The store conformance suite against the PostgreSQL backend, each test in its own schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from conformance import (
    LEASE,
    StoreConformance,
    claim,
    completion,
    conversation,
    event,
    new_run,
    running_run,
    step,
)
from pg import fresh_schema, sql, store_url

from orchestrion.errors import NotAnOrchestrionStore, SchemaTooNew, StoreError
from orchestrion.store import open_store
from orchestrion.store.base import Store
from orchestrion.store.migrations import POSTGRES_MIGRATIONS


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema("conf") as name:
        yield name


@pytest.fixture
def store_factory(schema: str) -> Callable[[], Store]:
    return lambda: open_store(store_url(schema))


@pytest.fixture
def expected_schema_version() -> int:
    return len(POSTGRES_MIGRATIONS)


class TestPostgresConformance(StoreConformance):
    pass


# ---- PostgreSQL only: refusals, URL, reconnects ---------------------------------------------


async def test_an_unreachable_server_is_a_clear_store_error() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/test?schema=nowhere")
    with pytest.raises(StoreError) as raised:
        await store.open()
    message = str(raised.value)
    assert "127.0.0.1:1" in message and "start" in message


async def test_a_schema_of_another_application_is_refused_untouched(schema: str) -> None:
    sql(f'CREATE SCHEMA "{schema}"')
    sql(f'CREATE TABLE "{schema}".invoices (id int primary key, total numeric)')
    sql(f'INSERT INTO "{schema}".invoices VALUES (1, 9.5)')
    with pytest.raises(NotAnOrchestrionStore):
        await open_store(store_url(schema)).open()
    tables = sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    assert tables == [("invoices",)]
    assert sql(f'SELECT id, total FROM "{schema}".invoices') == [(1, Decimal("9.5"))]


async def test_a_newer_schema_version_is_refused_untouched(schema: str) -> None:
    async with open_store(store_url(schema)):
        pass
    newer = str(len(POSTGRES_MIGRATIONS) + 1)
    sql(f"UPDATE \"{schema}\".meta SET value = %s WHERE key = 'schema_version'", (newer,))
    before = sql(f'SELECT key, value FROM "{schema}".meta ORDER BY key')
    with pytest.raises(SchemaTooNew):
        await open_store(store_url(schema)).open()
    assert sql(f'SELECT key, value FROM "{schema}".meta ORDER BY key') == before


async def test_schema_names_are_validated() -> None:
    with pytest.raises(StoreError):
        open_store("postgresql://postgres@127.0.0.1/test?schema=Robert'); DROP TABLE x;--")


async def test_the_store_survives_its_connections_being_terminated(schema: str) -> None:
    async with open_store(store_url(schema)) as store:
        cid = await conversation(store)
        run = await new_run(store, cid)
        lease = await claim(store, run)
        for seq in range(1, 4):
            killed = sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (f"orchestrion/{schema}",),
            )
            assert any(k[0] for k in killed)
            await store.record_step(lease, step(lease, seq), [], lease_seconds=LEASE)
        assert sorted(await store.load_steps(run.id)) == [1, 2, 3]
        await store.complete_run(lease, completion(), now=time.time())
        assert (await store.get_run(run.id)).status == "succeeded"


async def test_wait_for_work_wakes_on_a_queued_run_from_another_store(schema: str) -> None:
    async with open_store(store_url(schema)) as idle, open_store(store_url(schema)) as other:
        cid = await conversation(other)
        await idle.wait_for_work(5.0)  # starts listening (and returns: it may have missed some)
        waiter = asyncio.create_task(idle.wait_for_work(300.0))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await new_run(other, cid)
        await asyncio.wait_for(waiter, 60.0)  # a hang guard: NOTIFY must wake it, not the timeout


async def test_wait_for_events_wakes_on_a_write_to_its_run_from_another_store(
    schema: str,
) -> None:
    async with open_store(store_url(schema)) as reader, open_store(store_url(schema)) as writer:
        assert reader.notifies_events
        cid = await conversation(writer)
        _, watched, lease = await running_run(writer, cid)
        other_cid = await conversation(writer)
        _, unrelated, other_lease = await running_run(writer, other_cid)
        await reader.wait_for_events(watched.id, 5.0)  # starts listening (returns at once)
        waiter = asyncio.create_task(reader.wait_for_events(watched.id, 300.0))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        # Events of another run do not wake the readers of this one.
        await writer.append_events(other_lease, [event(unrelated.id, 2)])
        await asyncio.sleep(0.5)
        assert not waiter.done()
        started = time.monotonic()
        await writer.record_step(lease, step(lease, 1), [event(watched.id, 2)], lease_seconds=LEASE)
        # A hang guard far below the 300 s timeout: the NOTIFY woke it, not the timeout.
        await asyncio.wait_for(waiter, 10.0)
        assert time.monotonic() - started < 10.0
        # Each kind of write wakes it: appended events, the end of the run, a cancel.
        for write in (
            writer.append_events(lease, [event(watched.id, 3)]),
            writer.request_cancel(watched.id),
            writer.complete_run(lease, completion(), now=time.time()),
        ):
            waiter = asyncio.create_task(reader.wait_for_events(watched.id, 300.0))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            await write
            await asyncio.wait_for(waiter, 10.0)


async def test_a_notification_between_a_read_and_the_next_wait_is_not_slept_through(
    schema: str,
) -> None:
    async with open_store(store_url(schema)) as reader, open_store(store_url(schema)) as writer:
        _, run, lease = await running_run(writer)
        await reader.wait_for_events(run.id, 5.0)  # listening, and watching this run
        await reader.wait_for_events(run.id, 0.2)
        # Written while nobody waits (a reader busy reading): the next wait returns at once.
        await writer.append_events(lease, [event(run.id, 2)])
        await asyncio.sleep(0.5)  # the notification arrives meanwhile
        await asyncio.wait_for(reader.wait_for_events(run.id, 300.0), 10.0)
        # ... and only once: the wait after it sleeps until something new happens.
        waiter = asyncio.create_task(reader.wait_for_events(run.id, 300.0))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await writer.append_events(lease, [event(run.id, 3)])
        await asyncio.wait_for(waiter, 10.0)
