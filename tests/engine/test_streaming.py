"""Streaming coordination: durable, resumable event streams; turns that do not depend on
their consumer; cancellation; the interrupt policy."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrion import Agent, Orchestrion, RunFinished, tool
from orchestrion.demo.support import support_agent
from orchestrion.testing import ScriptedModel, call, say, turn_position

LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 4


def chunks_text(events: list[Any]) -> str:
    """Rebuild the streamed text from durable events, honouring resets."""
    text: dict[str, list[str]] = {}
    for e in events:
        if e.type == "text.delta":
            text.setdefault(e.parent_span_id, []).append(e.attributes["text"])
        elif e.type == "text.reset":
            text[e.parent_span_id] = []
    return "".join("".join(parts) for parts in text.values())


async def test_a_subscriber_gets_every_event_once_and_can_reattach(db_path: Path) -> None:
    model = ScriptedModel([say(LONG_TEXT)], latency=0.05, chunk_size=3, chunk_delay=0.005)
    agent = Agent("t", model=model)
    url = f"sqlite:///{db_path}"
    async with Orchestrion(url, agents=[agent]) as runner, Orchestrion(url) as reader:
        run = await runner.submit("t", "talk")
        runner.start(run.id)
        first_half: list[Any] = []
        async for event in reader.subscribe(run.id):
            first_half.append(event)
            if event.type == "text.delta":
                break  # the client disconnects mid-stream
        rest = [e async for e in reader.subscribe(run.id, after_seq=first_half[-1].seq)]
        seqs = [e.seq for e in first_half + rest]
        assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
        assert rest[-1].type == "run.finished"
        assert chunks_text(first_half + rest) == LONG_TEXT
        # Tokens were coalesced: far fewer rows than the 300 pieces the model streamed.
        text_rows = [e for e in first_half + rest if e.type == "text.delta"]
        assert 1 < len(text_rows) < len(LONG_TEXT) // 3


async def test_a_slow_or_vanished_consumer_does_not_hold_the_turn_back(db_path: Path) -> None:
    finished_tools: list[float] = []

    @tool
    async def work() -> str:
        """Some work."""
        finished_tools.append(time.monotonic())
        return "done"

    agent = Agent(
        "w", model=ScriptedModel([call("work", "Working on it."), say("All done.")]), tools=[work]
    )
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        stream = orx.stream("w", "go", conversation="c1")
        first = await stream.__anext__()
        await stream.aclose()  # the consumer goes away after one event
        run_id = first.run_id
        for _ in range(200):
            if (await orx.store.get_run(run_id)).terminal:
                break
            await asyncio.sleep(0.02)
        assert (await orx.store.get_run(run_id)).status == "succeeded"
        assert len(finished_tools) == 1

        slow_reader_saw: list[str] = []
        async for event in orx.stream("w", "again", conversation="c1"):
            slow_reader_saw.append(event.type)
            if len(slow_reader_saw) == 2:
                # By the time the slow reader looks again, the turn has moved on without it.
                for _ in range(200):
                    if len(finished_tools) == 2:
                        break
                    await asyncio.sleep(0.02)
                assert len(finished_tools) == 2
        assert slow_reader_saw[-1] == "run.finished"


async def test_cancel_stops_in_flight_tools_at_once(db_path: Path) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    @tool(timeout=None, retry=None)
    async def long_job() -> str:
        """A long job."""
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    agent = Agent("c", model=ScriptedModel([call("long_job"), say("x")]), tools=[long_job])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        run = await orx.submit("c", "go", conversation="c1")
        orx.start(run.id)
        await asyncio.wait_for(started.wait(), 10)
        await orx.cancel(run.id)
        await asyncio.wait_for(cancelled.wait(), 5)
        events = [e async for e in orx.subscribe(run.id)]
        assert isinstance(events[-1], RunFinished) and events[-1].status == "cancelled"
        conversation = await orx.store.get_conversation("c1")
        assert conversation.state == "AWAITING_INPUT" and conversation.version == 1
        assert await orx.history("c1") == []


async def test_interrupt_policy_cancels_the_running_turn_and_runs_the_new_one(
    db_path: Path,
) -> None:
    started = asyncio.Event()

    @tool(timeout=None, retry=None)
    async def slow(label: str) -> str:
        """Slow."""
        started.set()
        await asyncio.sleep(60 if label == "first" else 0)
        return label

    def script(request: Any) -> Any:
        user = [m for m in request.messages if m.role == "user"][-1].content
        return call("slow", label=user) if turn_position(request) == 0 else say(f"did {user}")

    agent = Agent("i", model=ScriptedModel(script), tools=[slow])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        first = await orx.submit("i", "first", conversation="c1")
        orx.start(first.id)
        await asyncio.wait_for(started.wait(), 10)
        result = await asyncio.wait_for(_send(orx, "second", "interrupt"), 20)
        assert result.status == "succeeded" and result.answer == "did second"
        assert (await orx.store.get_run(first.id)).status == "cancelled"
        users = [m.content for m in await orx.history("c1") if m.role == "user"]
        assert users == ["second"]


async def _send(orx: Orchestrion, message: str, policy: str) -> Any:
    run_id = ""
    async for event in orx.stream("i", message, conversation="c1", busy_policy=policy):  # type: ignore[arg-type]
        run_id = event.run_id
    return await orx.result(run_id)


def test_a_reader_follows_a_turn_across_a_process_crash(tmp_path: Path) -> None:
    """A turn dies with its process (SIGKILL); a reader that saw part of its events keeps
    reading while a worker resumes it: every later event exactly once, no gap."""
    db = tmp_path / "s.db"
    cli = str(Path(sys.executable).parent / "orchestrion")
    proc = subprocess.Popen(
        [
            cli,
            "--store",
            f"sqlite:///{db}",
            "demo",
            "--conversation",
            "c1",
            "--latency",
            "0.4",
            "--no-trace",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def steps() -> int:
        if not db.exists():
            return 0
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT count(*) FROM steps").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.OperationalError:
            return 0

    deadline = time.monotonic() + 30
    while steps() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    async def read_and_resume() -> list[Any]:
        async with Orchestrion(f"sqlite:///{db}", agents=[support_agent()]) as orx:
            (run,) = await orx.store.list_runs()
            seen = await orx.store.read_events(run.id)  # what a client had before the crash
            last = seen[-1].seq
            reader = asyncio.create_task(_collect(orx, run.id, last))
            await orx.work(drain=True)
            return seen + await asyncio.wait_for(reader, 20)

    events = asyncio.run(read_and_resume())
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1].type == "run.finished" and events[-1].attributes["run.status"] == "succeeded"
    assert any(e.type == "run.resumed" for e in events)
    assert "All set" in chunks_text(events)


async def _collect(orx: Orchestrion, run_id: str, after: int) -> list[Any]:
    return [e async for e in orx.subscribe(run_id, after_seq=after)]
