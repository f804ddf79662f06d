"""OpenTelemetry export (the `orchestrion[otel]` extra): GenAI spans and metrics built
from committed events. Imported only when telemetry is on (see observe/telemetry.py).

The engine's one call: after a batch of a run's events is committed, `RunEmitter.commit`
hands it to every listener in `RunEmitter.committed`; the runtime registers
`OtelExporter.on_committed` there through `Worker.committed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrion.observe.logs import capture_content_enabled
from orchestrion.observe.otel.exporter import OtelExporter
from orchestrion.observe.otel.setup import choose_providers

if TYPE_CHECKING:
    from orchestrion.runtime import Orchestrion


def attach(
    orx: Orchestrion, *, tracer_provider: Any = None, meter_provider: Any = None
) -> OtelExporter | None:
    """An exporter for this runtime's runs, registered with its worker and breakers."""
    providers = choose_providers(tracer_provider, meter_provider)
    if providers.tracer is None and providers.meter is None:
        return None
    exporter = OtelExporter(
        store=orx.store,
        agents=orx.agents,
        tracer_provider=providers.tracer,
        meter_provider=providers.meter,
        capture_content=capture_content_enabled(),
        owned=providers.owned,
    )
    orx.worker.committed.append(exporter.on_committed)
    breakers = orx.worker.breakers
    breakers.on_event = exporter.breaker_sink(breakers.on_event)
    return exporter


__all__ = ["OtelExporter", "attach"]
