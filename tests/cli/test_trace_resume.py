"""The trace of a run resumed after its process was killed (SIGKILL, for real), on SQLite
and PostgreSQL: the root names the owner that finished it, the re-executed step's span
times only its last execution, and the `resume` line comes before what ran after it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

from orchestrion.store import open_store
from orchestrion.store.base import EventRecord
from tests.cli.helpers import ORCHESTRION, cli, env, json_lines


async def _events(store: str, conversation: str) -> list[EventRecord]:
    async with open_store(store, create=False) as s:
        runs = await s.list_runs(conversation_id=conversation)
        return await s.read_events(runs[0].id) if runs else []


def _poll_events(store: str, conversation: str) -> list[EventRecord]:
    try:
        return asyncio.run(_events(store, conversation))
    except Exception:  # the store or the run may not exist yet
        return []


def _kill_inside(store: str, conversation: str, step: str) -> None:
    """Run a slow demo turn and SIGKILL it while `step` executes."""
    proc = subprocess.Popen(
        [str(ORCHESTRION), "--store", store, "demo", "--conversation", conversation,
         "--latency", "2", "--no-trace"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )  # fmt: skip
    try:
        for _ in range(3000):
            assert proc.poll() is None, "the demo ended before it could be killed"
            events = _poll_events(store, conversation)
            started = {e.span_id for e in events if e.type == "step.started" and e.name == step}
            finished = {e.span_id for e in events if e.type == "step.finished"}
            if started - finished:
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"{step} never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _spans(store: str, conversation: str) -> list[dict[str, Any]]:
    return json_lines(cli("trace", conversation, "--json", store=store).stdout)


def test_trace_of_a_resumed_run(store: str) -> None:
    step = "execute_tool book_appointment"
    _kill_inside(store, "c-kill", step)
    before = _spans(store, "c-kill")
    (first_root,) = [s for s in before if s["parent_span_id"] is None]
    first_owner = first_root["attributes"]["owner"]
    assert first_root["end"] is None  # the killed process never finished it

    drained = cli("worker", "--drain", store=store)
    assert "executed 1 run(s)" in drained.stdout
    spans = _spans(store, "c-kill")
    (root,) = [s for s in spans if s["parent_span_id"] is None]
    (resume,) = [s for s in spans if s["type"] == "run.resumed"]
    assert root["attributes"]["run.status"] == "succeeded"
    # The root names the owner that finished the run, and the first one separately.
    assert root["attributes"]["owner"] == resume["attributes"]["owner"] != first_owner
    assert root["attributes"]["first_owner"] == first_owner
    assert root["attributes"]["epoch"] == resume["attributes"]["epoch"] == 2

    (booked,) = [s for s in spans if s["name"] == step and s["type"] == "step.finished"]
    assert booked["attributes"]["attempts"] == 2
    assert booked["status"] == "ok"
    # Its span is its second execution: it starts after the resume, so the time the dead
    # process held it is not part of its duration.
    assert booked["start"] >= resume["start"]
    assert booked["latency_ms"] == round((booked["end"] - booked["start"]) * 1000, 3)
    (first_start,) = [s["start"] for s in before if s["name"] == step]  # still open there
    assert booked["start"] > first_start

    text = cli("trace", "c-kill", store=store).stdout.splitlines()
    resume_line = next(i for i, line in enumerate(text) if "resume: epoch 2 by " in line)
    booked_line = next(i for i, line in enumerate(text) if f"{step} (re-executed" in line)
    assert resume_line < booked_line
    # Spans that ran before the crash keep their place before the resume.
    crm_line = next(i for i, line in enumerate(text) if "execute_tool crm_lookup" in line)
    assert crm_line < resume_line

    # The booking happened once, under the step's idempotency key.
    effects = json_lines(cli("demo", "--outbox", "--json", store=store).stdout)
    assert [e["kind"] for e in effects].count("booking") == 1
