"""Helpers of the observability tests: providers exporting to the test's OTLP receiver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from orchestrion import Orchestrion, TurnResult
from tests.observe.otlp import ReceivedPoint, Receiver


@dataclass
class Providers:
    """SDK providers exporting over OTLP/HTTP to the receiver (as a user would build them)."""

    tracer: TracerProvider
    meter: MeterProvider
    done: bool = False

    @classmethod
    def to(cls, receiver: Receiver) -> Providers:
        tracer = TracerProvider(resource=Resource.create({"service.name": "otel-test"}))
        tracer.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{receiver.endpoint}/v1/metrics"),
            export_interval_millis=3_600_000,  # exported when flushed
        )
        return cls(tracer, MeterProvider(metric_readers=[reader]))

    def shutdown(self) -> None:
        """Flush everything to the receiver (once)."""
        if not self.done:
            self.done = True
            self.tracer.shutdown()
            self.meter.shutdown()


async def durable_result(orx: Orchestrion, run_id: str) -> TurnResult:
    """The run's result once its completion committed. (`send` returns at the live
    run.finished event, which on PostgreSQL comes before the commit: reported.)"""
    async for _ in orx.subscribe(run_id):  # ends at the stored run.finished
        pass
    return await orx.result(run_id)


def points(receiver: Receiver, metric: str, **where: Any) -> list[ReceivedPoint]:
    """The latest points of a metric whose attributes include `where`."""
    return [
        p
        for p in receiver.points
        if p.metric == metric and all(p.attributes.get(k) == v for k, v in where.items())
    ]
