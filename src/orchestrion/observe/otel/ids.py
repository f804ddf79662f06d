"""orchestrion's own ids on OpenTelemetry spans.

The SDK asks its tracer's IdGenerator for a new span's ids; while orchestrion starts a
span, the generator installed here answers with the ids the events already carry (the
run's trace id, the step's span id). Any other span started with that tracer gets random
ids from the generator it wraps.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace.id_generator import IdGenerator

_FORCED: contextvars.ContextVar[tuple[int | None, int] | None] = contextvars.ContextVar(
    "orchestrion_forced_ids", default=None
)


class OwnIds(IdGenerator):
    """Hands the SDK the ids orchestrion already chose for the span being started (and
    random ones, from the generator it wraps, to anyone else using the tracer)."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        forced = _FORCED.get()
        return forced[1] if forced is not None else self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()
        if forced is not None and forced[0] is not None:
            return forced[0]
        return self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        if _FORCED.get() is not None:
            return True  # orchestrion's are random (orchestrion.ids)
        inner = getattr(self.inner, "is_trace_id_random", None)  # newer SDKs only
        return bool(inner()) if inner is not None else False


@contextlib.contextmanager
def using_ids(span_id: str, trace_id: str | None = None) -> Iterator[None]:
    token = _FORCED.set((None if trace_id is None else int(trace_id, 16), int(span_id, 16)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def own_ids(tracer: trace_api.Tracer) -> bool:
    """Make the SDK tracer use orchestrion's ids. False for tracers of other SDKs."""
    inner = getattr(tracer, "id_generator", None)
    if isinstance(inner, OwnIds):
        return True
    if not isinstance(inner, IdGenerator):
        return False
    tracer.id_generator = OwnIds(inner)  # type: ignore[attr-defined]
    return True
