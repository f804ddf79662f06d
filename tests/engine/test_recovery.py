"""Who may take a running run over: a dead owner on this host at once; an owner on
another host only once its lease has expired (nothing about it is provable from here)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from orchestrion import Orchestrion
from orchestrion.engine.owner import owner_is_gone, process_identity
from orchestrion.engine.worker import Worker

from .helpers import Counter, weather_agent


def test_owner_identity_is_only_gone_when_provably_dead() -> None:
    me = process_identity()
    assert not owner_is_gone(me)
    assert owner_is_gone(_identity_of_a_finished_process())  # reaped: the pid is gone
    host, pid, started = me.rsplit("/", 2)
    assert owner_is_gone(f"{host}/{pid}/{int(started) + 1}")  # same pid, another process
    assert not owner_is_gone(f"elsewhere:1234/{pid}/{started}")  # another host: unknown
    assert not owner_is_gone("garbage")


async def test_a_run_owned_on_another_host_is_taken_over_after_its_lease(db_path: Path) -> None:
    agent = weather_agent(Counter())
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        run = await orx.submit("weather", "hi", conversation="c1")
        lease = await orx.store.claim(run.id, owner="far-away:beef/4242/1", expected_epoch=0,
                                      lease_seconds=0.5, now=time.time())
        assert lease is not None
        worker = Worker(orx.store, orx.agents, lease_seconds=30)
        assert await worker.claim_next() is None  # alive as far as anyone here can tell
        await asyncio.sleep(0.6)
        claimed = await worker.claim_next()
        assert claimed is not None
        taken, new_lease, resumed = claimed
        assert taken.id == run.id and resumed and new_lease.epoch == lease.epoch + 1
        assert await worker.execute(taken, new_lease, resumed=True) == "succeeded"


def _identity_of_a_finished_process() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    return identity


async def test_a_run_of_a_dead_local_process_is_taken_over_at_once(db_path: Path) -> None:
    agent = weather_agent(Counter())
    dead = _identity_of_a_finished_process()
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        run = await orx.submit("weather", "hi", conversation="c1")
        lease = await orx.store.claim(run.id, owner=dead, expected_epoch=0, lease_seconds=300,
                                      now=time.time())
        assert lease is not None
        claimed = await Worker(orx.store, orx.agents).claim_next()
        assert claimed is not None and claimed[0].id == run.id  # no 300 s wait
