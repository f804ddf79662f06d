"""The store conformance suite against the PostgreSQL backend, each test in its own schema."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from conformance import LEASE, StoreConformance, claim, completion, conversation, new_run, step
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
