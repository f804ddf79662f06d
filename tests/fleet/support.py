"""Helpers for fleet tests: real `orchestrion worker` processes on one PostgreSQL schema."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrion import Orchestrion
from orchestrion.demo.support import support_agent
from orchestrion.store.base import RunRecord
from tests.fleet.agents import slow
from tests.store.pg import sql, store_url

CLI = str(Path(sys.executable).parent / "orchestrion")
REPO = Path(__file__).resolve().parents[2]
# Hang guards for a broken fleet, never timing assertions.
SETTLE_TIMEOUT = 120.0
STEPS_PER_TURN = 6  # 3 model calls + crm_lookup + book_appointment + send_email
MESSAGES_PER_TURN = 7


class Fleet:
    """Worker processes of one schema; every one is stopped (and reaped) at the end."""

    def __init__(self, schema: str, tmp: Path) -> None:
        self.schema = schema
        self.url = store_url(schema)
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, *args: str, concurrency: int = 4, app: str = "tests.fleet.agents:slow"
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [
                CLI,
                "--store",
                self.url,
                "worker",
                "--concurrency",
                str(concurrency),
                "--app",
                app,
                "--demo",  # the demo's support agent too
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker-{self.procs.index(proc)}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def orchestrion(url: str) -> Orchestrion:
    return Orchestrion(url, agents=[support_agent(), slow])


async def submit(
    url: str, agent: str, conversations: list[str], turns_each: int
) -> list[RunRecord]:
    """Queue turns round-robin over the conversations (turn i of each in order)."""
    runs = []
    async with orchestrion(url) as orx:
        for turn in range(turns_each):
            for cid in conversations:
                message = f"I'm customer 42, {cid} turn {turn}: move me to Friday {turn % 12}:00"
                runs.append(await orx.submit(agent, message, conversation=cid))
    return runs


def count_where(schema: str, query: str, params: tuple[object, ...] = ()) -> int:
    return int(sql(query.replace("{s}", f'"{schema}"'), params)[0][0])  # type: ignore[call-overload]


def wait_for(predicate: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def all_settled(schema: str, total: int) -> bool:
    return (
        count_where(
            schema,
            "SELECT count(*) FROM {s}.runs WHERE status IN ('succeeded', 'failed', 'cancelled')",
        )
        == total
    )


async def check_exactly_once(
    url: str, run_ids: list[str], turns_per_conversation: int
) -> dict[str, Any]:
    """Every turn succeeded, each side effect happened once per turn, every history holds
    each turn once and in order; returns facts for further assertions."""
    async with orchestrion(url) as orx:
        store = orx.store
        runs = [await store.get_run(rid) for rid in run_ids]
        assert Counter(r.status for r in runs) == {"succeeded": len(runs)}, [
            (r.id, r.status, r.error) for r in runs if r.status != "succeeded"
        ]
        started, resumed = Counter[str](), Counter[str]()
        first_step_at: dict[str, float] = {}
        for r in runs:
            steps = await store.load_steps(r.id)
            first_step_at[r.id] = min(s.started_at for s in steps.values())
            assert sorted(steps) == list(range(1, STEPS_PER_TURN + 1)), (r.id, sorted(steps))
            events = await store.read_events(r.id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            started[r.id] = sum(e.type == "run.started" for e in events)
            resumed[r.id] = sum(e.type == "run.resumed" for e in events)
            assert sum(e.type == "run.finished" for e in events) == 1
        effects = await store.list_effects()
        per_run = Counter((e.run_id, e.kind) for e in effects)
        for r in runs:
            assert per_run[(r.id, "booking")] == 1 and per_run[(r.id, "email")] == 1, r.id
        assert len(effects) == 2 * len(runs)
        by_conversation: dict[str, list[RunRecord]] = {}
        for r in runs:
            by_conversation.setdefault(r.conversation_id, []).append(r)
        for cid, conv_runs in by_conversation.items():
            conv = await store.get_conversation(cid)
            assert conv.version == turns_per_conversation
            history = await store.history(cid)
            assert len(history) == MESSAGES_PER_TURN * turns_per_conversation
            users = [m["content"] for m in history if m["role"] == "user"]
            ordered = sorted(conv_runs, key=lambda r: r.position)
            assert users == [r.input["message"]["content"] for r in ordered]
            # One run at a time per conversation: the next turn's first step began only
            # after the previous turn ended (its end time is taken before it commits).
            for before, after in itertools.pairwise(ordered):
                assert before.finished_at is not None
                assert before.finished_at <= first_step_at[after.id], (before.id, after.id)
        return {
            "owners": Counter(r.owner for r in runs),
            "epochs": Counter(r.epoch for r in runs),
            "started": started,
            "resumed": resumed,
        }


def run(coro: Any) -> Any:
    return asyncio.run(coro)
