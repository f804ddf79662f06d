"""SIGKILL during a summarisation step, with real processes, on both stores: a worker
process is killed while its summarising model call is in flight, or after the summary
step was recorded (inside the next model call); a second worker resumes the run. The
summary of that stretch is made once: one completed summariser call per conversation,
one stored summary, one recorded summarize step, and the turn succeeds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel, say
from orchestrion.store import open_store
from tests.context.support import chat_turns, seed_turns
from tests.store.pg import any_store_url

CLI = str(Path(sys.executable).parent / "orchestrion")
APP = """
import asyncio, os
from orchestrion import Agent, ScriptedModel, say
from orchestrion.context import summarize

MARKS = os.environ["SUMMARY_MARKS"]

def mark(word):
    with open(MARKS, "a") as f:
        f.write(word + "\\n")

class Summariser(ScriptedModel):
    async def stream(self, request):
        mark("started")
        await asyncio.sleep(float(os.environ.get("SUMMARY_LATENCY", "0")))
        async for delta in super().stream(request):
            yield delta
        mark("finished")

agents = [Agent(
    "support",
    model=ScriptedModel([say("ok")], latency=float(os.environ.get("CHAT_LATENCY", "0"))),
    instructions="Be brief.",
    context=summarize(1_500, keep_recent=2, model=Summariser([say("SUMMARY")], name="sum")),
)]
"""


def worker(
    url: str, app: Path, marks: Path, *, drain: bool, **latency: float
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUMMARY_MARKS": str(marks)}
    env.update({k.upper(): str(v) for k, v in latency.items()})
    args = [CLI, "--store", url, "worker", "--app", f"{app}:agents"]
    return subprocess.Popen(
        args + (["--drain"] if drain else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_for(check: Callable[[], object], patience: float = 60.0) -> None:
    deadline = time.monotonic() + patience
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def text(path: Path) -> str:
    return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_summarisation_then_resume_makes_the_summary_once(
    backend: str, tmp_path: Path
) -> None:
    app, marks = tmp_path / "app.py", tmp_path / "marks.txt"
    app.write_text(APP)
    with any_store_url(backend, tmp_path) as url:
        asyncio.run(_scenario(url, app, marks))


async def _scenario(url: str, app: Path, marks: Path) -> None:
    submitter = Agent("support", model=ScriptedModel([say("")]))
    runs: dict[str, str] = {}

    async def submit(cid: str) -> None:
        async with Orchestrion(url, agents=[submitter]) as orx:
            runs[cid] = (await orx.submit("support", "one more", conversation=cid)).id

    async with open_store(url) as store:
        for cid in ("killed-inside", "killed-after"):
            await seed_turns(store, cid, chat_turns(12), agent="support")
    await submit("killed-inside")

    async with open_store(url) as store:

        async def summary_started() -> bool:
            return "started" in await text(marks)

        async def summaries_recorded() -> bool:
            for run_id in runs.values():
                steps = await store.load_steps(run_id)
                if not any(s.name.startswith("summarize") for s in steps.values()):
                    return False
            return True

        # 1. Killed while the summariser is answering (it takes 30 s: never finishes).
        killed = worker(url, app, marks, drain=False, summary_latency=30)
        await wait_for(summary_started)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert (await text(marks)).split() == ["started"]
        # 2. The next worker takes that run over, and a run of another conversation; it
        # is killed inside their chat calls, once both summaries were recorded.
        await submit("killed-after")
        killed = worker(url, app, marks, drain=False, chat_latency=30)
        await wait_for(summaries_recorded)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        # 3. A worker drains what is left.
        drained = worker(url, app, marks, drain=True)
        _, err = await asyncio.to_thread(drained.communicate, timeout=120)
        assert drained.returncode == 0, err.decode()

        for cid, run_id in runs.items():
            run = await store.get_run(run_id)
            assert run.status == "succeeded" and run.epoch >= 2, (cid, run.status, run.error)
            summaries = await store.load_summaries(cid)
            assert [(s.run_id, s.text) for s in summaries] == [(run_id, "SUMMARY")]
            steps = await store.load_steps(run_id)
            made = [s for s in steps.values() if s.name.startswith("summarize")]
            assert len(made) == 1 and made[0].status == "ok"
    # Each summary completed once: the killed call never finished, and the recorded ones
    # were replayed, not asked again.
    assert sorted((await text(marks)).split()) == ["finished"] * 2 + ["started"] * 3
