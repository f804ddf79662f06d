"""Which OpenTelemetry providers to use: passed in code, the application's global ones, or
ones built here from the standard OTEL_* environment (then owned, and shut down, here)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from orchestrion.observe.telemetry import env_exporter

log = logging.getLogger("orchestrion.telemetry")

DEFAULT_SERVICE_NAME = "orchestrion"


def global_providers() -> tuple[trace_api.TracerProvider | None, metrics_api.MeterProvider | None]:
    """The providers the application set globally (None where it set none)."""
    tracer = trace_api.get_tracer_provider()
    meter = metrics_api.get_meter_provider()
    unset_tracer = isinstance(tracer, trace_api.ProxyTracerProvider | trace_api.NoOpTracerProvider)
    unset_meter = type(meter).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider")
    return (None if unset_tracer else tracer), (None if unset_meter else meter)


def resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, with "orchestrion" as the service
    name when neither names one."""
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    base = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    return base


def env_tracer_provider() -> trace_api.TracerProvider | None:
    chosen = env_exporter("traces")
    if chosen is None:
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if chosen == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _warn_about_grpc()
        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    provider = TracerProvider(resource=resource())  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    return provider


def env_meter_provider() -> metrics_api.MeterProvider | None:
    chosen = env_exporter("metrics")
    if chosen is None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )

    exporter: MetricExporter
    if chosen == "console":
        exporter = ConsoleMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    reader = PeriodicExportingMetricReader(exporter)  # OTEL_METRIC_EXPORT_INTERVAL
    return MeterProvider(resource=resource(), metric_readers=[reader])


def _warn_about_grpc() -> None:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol.strip() != "http/protobuf":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s: orchestrion exports OTLP over HTTP "
            "(http/protobuf, port 4318 on a collector)",
            protocol,
        )


@dataclass
class Providers:
    tracer: trace_api.TracerProvider | None
    meter: metrics_api.MeterProvider | None
    owned: list[object] = field(default_factory=list)  # built here: shut down on close


def choose_providers(
    tracer_provider: trace_api.TracerProvider | None,
    meter_provider: metrics_api.MeterProvider | None,
) -> Providers:
    """Per signal: the one passed in, else the global one, else one from the environment."""
    global_tracer, global_meter = global_providers()
    chosen = Providers(tracer_provider or global_tracer, meter_provider or global_meter)
    if chosen.tracer is None:
        chosen.tracer = env_tracer_provider()
        if chosen.tracer is not None:
            chosen.owned.append(chosen.tracer)
    if chosen.meter is None:
        chosen.meter = env_meter_provider()
        if chosen.meter is not None:
            chosen.owned.append(chosen.meter)
    return chosen
