"""Crash: a worker process exporting to OTLP (configured by the OTEL_* environment alone)
is killed with SIGKILL inside a tool call; another worker process resumes the run.

The backend must see one trace: the run's span once, the model call the dead worker
finished (exported before it died) once, no span for the step the new worker replays, and
the interrupted tool call as one span from its first start, marked `resumed`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrion import Orchestrion
from orchestrion.observe.events import run_span_id
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, RunRecord
from tests.observe.agents import weather_agent
from tests.observe.otlp import Receiver

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "orchestrion")


async def _submit(store: str) -> RunRecord:
    async with Orchestrion(store, agents=[weather_agent()]) as orx:
        return await orx.submit("weather", "What is the weather in Paris?", conversation="c-9")


def _stored_events(store: str, run_id: str) -> list[EventRecord]:
    async def read() -> list[EventRecord]:
        s = open_store(store)
        await s.open()
        try:
            return await s.read_events(run_id)
        finally:
            await s.close()

    return asyncio.run(read())


def _worker(store: str, receiver: Receiver, *, hold: float, drain: bool) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "otel-crash-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # a finished span leaves within 50 ms
        "OTEL_TEST_TOOL_HOLD": str(hold),
    }
    command = [CLI, "--store", store, "worker", "--app", "tests.observe.agents:weather"]
    return subprocess.Popen(
        [*command, "--drain"] if drain else command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(predicate: object, what: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        if proc.poll() is not None:
            errors = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the worker exited before {what}: {errors}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_a_run_killed_mid_tool_and_resumed_elsewhere_is_one_trace(
    store: str, receiver: Receiver
) -> None:
    run = asyncio.run(_submit(store))
    first = _worker(store, receiver, hold=120, drain=False)
    try:
        # The model call finished and reached the backend; the tool call is under way.
        _wait(lambda: receiver.trace(run.trace_id), "the first chat span was exported", first)
        _wait(
            lambda: any(
                e.type == "step.started" and e.name == "execute_tool lookup"
                for e in _stored_events(store, run.id)
            ),
            "the tool step started",
            first,
        )
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        if first.stderr:
            first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    before = list(receiver.spans)
    assert [s.name for s in before] == ["chat scripted-weather"]

    second = _worker(store, receiver, hold=0, drain=True)
    _, errors = second.communicate(timeout=120)
    assert second.returncode == 0, errors

    events = _stored_events(store, run.id)
    assert events[-1].type == "run.finished" and events[-1].attributes["run.status"] == "succeeded"
    spans = receiver.trace(run.trace_id)
    assert len(spans) == len(receiver.spans) == 4
    assert sorted(s.name for s in spans) == [
        "chat scripted-weather",
        "chat scripted-weather",
        "execute_tool lookup",
        "invoke_agent weather",
    ]
    assert len({s.span_id for s in spans}) == 4  # the replayed model call was not re-exported
    root = next(s for s in spans if s.name == "invoke_agent weather")
    assert root.span_id == run_span_id(run.id) and root.parent_span_id is None
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    assert root.event_names().count("resumed") == 1
    (started,) = [e for e in events if e.type == "run.started"]  # by the dead worker
    assert root.start == pytest.approx(started.start, abs=1e-6)
    assert root.resource["service.name"] == "otel-crash-test"

    # Spans carry the store's span ids: the trace tree and the backend name each other.
    finished = {e.span_id for e in events if e.type == "step.finished"}
    assert {s.span_id for s in spans if s is not root} == finished
    chats = sorted(
        (s for s in spans if s.name.startswith("chat")),
        key=lambda s: s.attributes["orchestrion.step.seq"],
    )
    assert [c.attributes["orchestrion.step.seq"] for c in chats] == [1, 3]
    assert chats[0].span_id == before[0].span_id

    # The interrupted tool call: one span, from its first start to its end, marked.
    tool = next(s for s in spans if s.name == "execute_tool lookup")
    starts = [e for e in events if e.type == "step.started" and e.span_id == tool.span_id]
    assert len(starts) == 2  # the dead worker's start and the new worker's
    assert tool.start == pytest.approx(starts[0].start, abs=1e-6)
    (resumed,) = [e for e in tool.events if e.name == "resumed"]
    assert resumed.time == pytest.approx(starts[1].start, abs=1e-6)
    (end,) = [e for e in events if e.type == "step.finished" and e.span_id == tool.span_id]
    assert end.end is not None and tool.end == pytest.approx(end.end, abs=1e-6)
    assert tool.status_code != 2

    # The resuming worker's metrics: one takeover, one run.
    takeovers = [p for p in receiver.points if p.metric == "orchestrion.lease.takeovers"]
    assert [p.value for p in takeovers] == [1]
    runs = [p for p in receiver.points if p.metric == "orchestrion.runs"]
    assert [(p.attributes["orchestrion.run.status"], p.value) for p in runs] == [("succeeded", 1)]
