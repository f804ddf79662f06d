"""Whether this process exports OpenTelemetry, decided without importing it.

`Orchestrion(...)` calls `telemetry_for` once. OpenTelemetry is used when one of these
holds, in this order:

1. a `tracer_provider` / `meter_provider` was passed in code;
2. the application already set a global OpenTelemetry provider (only looked at when the
   application imported `opentelemetry` itself);
3. the standard environment asks for an export: `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
   per-signal `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`), or `OTEL_TRACES_EXPORTER` /
   `OTEL_METRICS_EXPORTER` set to `otlp` or `console`.

`OTEL_SDK_DISABLED=true` turns it all off. Otherwise nothing of OpenTelemetry is
imported, and without the `orchestrion[otel]` extra a configured environment only earns a
warning.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Protocol

from orchestrion.store.base import EventRecord

if TYPE_CHECKING:
    from orchestrion.observe.traceparent import TraceParent
    from orchestrion.runtime import Orchestrion

log = logging.getLogger("orchestrion.telemetry")

INSTALL_HINT = "pip install 'orchestrion[otel]'"


class Telemetry(Protocol):
    """What the runtime holds when telemetry is on (see observe/otel/exporter.py)."""

    def on_committed(self, events: list[EventRecord]) -> None: ...

    def ambient_parent(self) -> TraceParent | None: ...

    async def aclose(self) -> None: ...


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def env_exporter(signal: str) -> str | None:
    """The exporter the environment asks for one signal ("traces" or "metrics"):
    "otlp", "console", or None."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    chosen = _env(f"OTEL_{signal.upper()}_EXPORTER").lower()
    if chosen == "none":
        return None
    if chosen in ("otlp", "console"):
        return chosen
    if _env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return None


def _global_provider_set() -> bool:
    """An application that configured OpenTelemetry itself imported it already."""
    if "opentelemetry.trace" not in sys.modules:
        return False
    from orchestrion.observe.otel.setup import global_providers

    tracer, meter = global_providers()
    return tracer is not None or meter is not None


def telemetry_for(
    orx: Orchestrion, *, tracer_provider: Any = None, meter_provider: Any = None
) -> Telemetry | None:
    """The exporter for this runtime, attached to its worker; None when telemetry is off."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return None
    wanted = (
        tracer_provider is not None
        or meter_provider is not None
        or env_exporter("traces") is not None
        or env_exporter("metrics") is not None
    )
    if not wanted and not _global_provider_set():
        return None
    try:
        from orchestrion.observe.otel import attach
    except ImportError as exc:
        log.warning(
            "OpenTelemetry export is configured but not installed (%s): spans and metrics "
            "are not exported; %s",
            exc,
            INSTALL_HINT,
        )
        return None
    return attach(orx, tracer_provider=tracer_provider, meter_provider=meter_provider)
