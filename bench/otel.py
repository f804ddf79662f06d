"""What the OpenTelemetry export costs a turn: turns on SQLite with export off and on, in
one process, in one run.

The turn: a scripted model call that asks for a tool, the tool, a second model call (three
journaled steps). "on" builds every span and metric from the committed events and hands
the spans to a BatchSpanProcessor, whose exporter discards them: the network leg runs on
the processor's thread, not in the turn, so it is left out of the measurement on purpose.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrion import Agent, Orchestrion, ScriptedModel, call, say, tool


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _agent() -> Agent:
    model = ScriptedModel([call("lookup", "Checking.", city="Paris"), say("Sunny in Paris.")])
    return Agent("bench", model=model, tools=[lookup])


def _providers() -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer = TracerProvider()
    tracer.add_span_processor(BatchSpanProcessor(Discard()))
    return tracer, MeterProvider(metric_readers=[InMemoryMetricReader()])


async def _turns(path: Path, turns: int, export: bool) -> tuple[float, float]:
    """Wall-clock and CPU (this process, all threads) µs per turn, turns one after
    another in one conversation."""
    tracer, meter = _providers() if export else (None, None)
    async with Orchestrion(
        f"sqlite:///{path}", agents=[_agent()], tracer_provider=tracer, meter_provider=meter
    ) as orx:
        assert (orx.telemetry is not None) == export
        await orx.send("bench", "warm up")
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(turns):
            await orx.send("bench", "Weather in Paris?", conversation="bench")
        if tracer is not None:
            tracer.force_flush()  # the processor's thread has handled every span
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if tracer is not None:
        tracer.shutdown()
        meter.shutdown()
    return elapsed / turns * 1e6, cpu / turns * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    turns = 10 if quick else 200
    repeats = 1 if quick else 5
    results: dict[str, Any] = {"turns": turns, "repeats": repeats}
    measured: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-") as folder:
        for i in range(repeats):  # interleaved, so both modes meet the same machine
            for mode in ("off", "on"):
                path = Path(folder) / f"{mode}-{i}.db"
                measured[mode].append(asyncio.run(_turns(path, turns, mode == "on")))
    for mode, runs in measured.items():
        results[f"turn_us_{mode}"] = round(min(wall for wall, _ in runs), 1)
        results[f"cpu_us_{mode}"] = round(min(cpu for _, cpu in runs), 1)
    results["ratio"] = round(results["turn_us_on"] / results["turn_us_off"], 3)
    results["cpu_ratio"] = round(results["cpu_us_on"] / results["cpu_us_off"], 3)
    added = (results["cpu_us_on"] - results["cpu_us_off"]) / 3
    results["added_cpu_us_per_step"] = round(added, 1)
    results["lines"] = [
        f"turns of 3 steps (model, tool, model) on SQLite, {turns} per run, best of {repeats}",
        f"{'export':8} {'turn (µs)':>10} {'CPU (µs)':>10}",
        f"{'off':8} {results['turn_us_off']:>10.1f} {results['cpu_us_off']:>10.1f}",
        f"{'on':8} {results['turn_us_on']:>10.1f} {results['cpu_us_on']:>10.1f}",
        f"on / off: {results['ratio']:.3f} wall, {results['cpu_ratio']:.3f} CPU "
        f"({added:+.1f} µs of CPU per step)",
    ]
    return results
