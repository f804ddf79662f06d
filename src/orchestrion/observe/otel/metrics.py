"""Metrics: the GenAI client metrics of the conventions, and orchestrion's own.

Recorded from committed events only, like the spans, so a replayed step counts nothing
twice and a step re-executed after a crash counts once, in the process that finished it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.util.types import AttributeValue

from orchestrion.observe.otel.version import VERSION

# Bucket boundaries the conventions ask for.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
TTFC_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)

Attributes = Mapping[str, AttributeValue]


class Metrics:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("orchestrion", VERSION)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration (model calls and tool executions).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from the model request to the first text of its answer.",
            explicit_bucket_boundaries_advisory=TTFC_BUCKETS,
        )
        self.runs = meter.create_counter(
            "orchestrion.runs", unit="{run}", description="Runs that ended, by status."
        )
        self.retries = meter.create_counter(
            "orchestrion.step.retries",
            unit="{retry}",
            description="Retries of model and tool calls (a wait before another attempt).",
        )
        self.breaker_transitions = meter.create_counter(
            "orchestrion.breaker.transitions",
            unit="{transition}",
            description="Circuit breaker state changes seen by this process.",
        )
        self.lease_takeovers = meter.create_counter(
            "orchestrion.lease.takeovers",
            unit="{run}",
            description="Runs this process resumed after their previous owner died or "
            "lost its lease.",
        )
        self.claim_latency = meter.create_histogram(
            "orchestrion.run.claim_latency",
            unit="s",
            description="Time from a run's submission to its start.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def operation(
        self,
        attributes: Attributes,
        *,
        duration: float,
        tokens: Mapping[str, int],
        first_chunk: float | None,
    ) -> None:
        self.operation_duration.record(duration, attributes)
        plain = {k: v for k, v in attributes.items() if k != "error.type"}
        for kind, count in tokens.items():
            self.token_usage.record(count, {**plain, "gen_ai.token.type": kind})
        if first_chunk is not None:
            self.time_to_first_chunk.record(first_chunk, plain)

    def breaker_event(self, type_: str, attributes: Mapping[str, Any]) -> None:
        if type_ != "breaker.transition":
            return
        self.breaker_transitions.add(
            1,
            {
                "orchestrion.breaker.name": str(attributes.get("breaker")),
                "orchestrion.breaker.from": str(attributes.get("from")),
                "orchestrion.breaker.to": str(attributes.get("to")),
                # "local": this process moved it; "store": it learnt of another's move
                "orchestrion.breaker.source": str(attributes.get("source", "local")),
            },
        )
