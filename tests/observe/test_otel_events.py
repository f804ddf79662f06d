"""What else a run's spans say: argument repairs, cancellation, breaker decisions, the
metrics of breakers (through the SDK's in-memory exporter and reader)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from orchestrion import Agent, Orchestrion, RetryPolicy, ScriptedModel, raw_call, say, tool
from orchestrion.errors import ProviderUnavailable
from orchestrion.models.messages import ModelDelta, ModelRequest
from tests.observe.agents import weather_agent


class Memory:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer = TracerProvider()
        self.tracer.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter = MeterProvider(metric_readers=[self.reader])

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def sums(self, metric: str) -> list[tuple[dict[str, Any], float]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            (dict(p.attributes or {}), p.value)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == metric
            for p in m.data.data_points  # type: ignore[union-attr]
        ]


async def test_repairs_are_events_of_the_run_and_a_cancel_ends_open_steps(db_path: Path) -> None:
    started = asyncio.Event()

    @tool(retry=None, timeout=None)
    async def wait_here(city: str) -> str:
        """Blocks until cancelled."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    model = ScriptedModel([raw_call("wait_here", "{'city': 'Paris',}"), say("unreachable")])
    agent = Agent("stuck", model=model, tools=[wait_here])
    memory = Memory()
    async with Orchestrion(
        f"sqlite:///{db_path}", agents=[agent], tracer_provider=memory.tracer
    ) as orx:
        run = await orx.submit("stuck", "Weather in Paris?")
        orx.start(run.id)
        await started.wait()
        await orx.cancel(run.id)
    (root,) = memory.named("invoke_agent")
    (tool_span,) = memory.named("execute_tool wait_here")
    assert root.attributes is not None and tool_span.attributes is not None
    assert root.attributes["orchestrion.run.status"] == "cancelled"
    assert root.status.status_code == StatusCode.ERROR
    # The tool never finished: its span ends with the run, as interrupted.
    assert tool_span.attributes["error.type"] == "interrupted"
    assert tool_span.status.status_code == StatusCode.ERROR
    assert tool_span.end_time == root.end_time
    (repaired,) = [e for e in root.events if e.name == "tool.arguments.repaired"]
    assert repaired.attributes is not None
    assert repaired.attributes["tool_name"] == "wait_here" and repaired.attributes["repairs"]
    assert "raw" not in repaired.attributes  # the model's raw output is content


LEAKED_KEY = "sk-proj-0123456789abcdefABCDEF"


class DownModel:
    """A provider that is down: every call fails with a retryable error (whose message,
    as some providers' do, repeats the key it was given)."""

    name = "down"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        raise ProviderUnavailable(f"overloaded (key {LEAKED_KEY})", status_code=529)
        yield  # an async generator


async def test_breaker_decisions_are_span_events_and_transitions_are_counted(
    db_path: Path,
) -> None:
    retry = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002, jitter=False)
    agent = Agent("fragile", model=DownModel(), retry=retry)
    memory = Memory()
    async with Orchestrion(
        f"sqlite:///{db_path}",
        agents=[agent, weather_agent()],
        tracer_provider=memory.tracer,
        meter_provider=memory.meter,
        breaker_settings={"minimum_calls": 2, "wait_in_open": 60},
    ) as orx:
        first = await orx.send("fragile", "hello")
        second = await orx.send("fragile", "hello again")
        fine = await orx.send("weather", "and the weather?")
    assert (first.status, second.status, fine.status) == ("failed", "failed", "succeeded")
    chats = sorted(memory.named("chat down"), key=lambda s: s.start_time or 0)
    assert len(chats) == 2
    opened = [e for e in chats[0].events if e.name == "breaker.transition"]
    assert [(e.attributes or {}).get("to") for e in opened] == ["open"]
    errors = [e for e in chats[0].events if e.name == "retry.attempt"]
    assert errors and all(
        "overloaded (key [redacted])" in str((e.attributes or {}).get("error")) for e in errors
    )
    refused = [e for e in chats[1].events if e.name == "breaker.rejected"]
    assert refused and chats[1].attributes is not None
    assert chats[1].attributes["error.type"] == "BreakerOpen"
    transitions = memory.sums("orchestrion.breaker.transitions")
    named = [(a["orchestrion.breaker.name"], a["orchestrion.breaker.to"]) for a, _ in transitions]
    assert named == [("model:down", "open")] and transitions[0][1] == 1
    runs = {a["orchestrion.run.status"]: v for a, v in memory.sums("orchestrion.runs")}
    assert runs == {"failed": 2, "succeeded": 1}
