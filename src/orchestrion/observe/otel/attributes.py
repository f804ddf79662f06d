"""From orchestrion's events to GenAI semantic-convention attributes.

Events keep orchestrion's own names (what `orchestrion trace` shows); spans speak the
conventions (https://github.com/open-telemetry/semantic-conventions-genai). What the
events do not carry is derived from the agent this process runs (provider, model id,
server address), or left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from orchestrion.engine.agent import Agent
from orchestrion.models.base import Model
from orchestrion.models.scripted import ScriptedModel
from orchestrion.observe.logs import redact

# Event attributes that hold what users, models and tools said, per event type: exported
# only when content capture is on.
CONTENT_FIELDS: Mapping[str, frozenset[str]] = {
    "model.response": frozenset({"text"}),
    "tool.result": frozenset({"result"}),
    "run.finished": frozenset({"answer"}),
    "step.started": frozenset({"arguments"}),
    "step.finished": frozenset({"arguments"}),
    "tool.arguments.repaired": frozenset({"raw", "error"}),
    "tool.arguments.invalid": frozenset({"raw", "error"}),
    "output.validated": frozenset({"raw", "error"}),
    "output.invalid": frozenset({"raw", "error"}),
}
# Step attributes already exported under their convention names (or as content).
_STEP_KEYS_MAPPED = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.tool.name",
        "gen_ai.tool.call.id",
        "arguments",
        "step.seq",
        "idempotency_key",
        "round",
        "effect",
        "error.type",
    }
)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the conventions want to know about a model endpoint."""

    dependency: str  # orchestrion's name for it ("openai:gpt-4o"): breakers, budgets, traces
    provider: str  # gen_ai.provider.name
    model: str  # gen_ai.request.model: the provider's model id
    server_address: str | None = None
    server_port: int | None = None

    def attributes(self) -> dict[str, AttributeValue]:
        out: dict[str, AttributeValue] = {
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.model,
        }
        if self.server_address:
            out["server.address"] = self.server_address
            if self.server_port:
                out["server.port"] = self.server_port
        return out


def model_info(model: Model | None, dependency: str) -> ModelInfo:
    """Provider, model id and server of a model object (or, without one, of its name)."""
    if model is None:
        provider, _, rest = dependency.partition(":")
        return ModelInfo(dependency, provider if rest else "unknown", rest or dependency)
    if isinstance(model, ScriptedModel):
        return ModelInfo(dependency, "orchestrion.scripted", model.name)
    prefix, _, rest = dependency.partition(":")
    provider = _text(getattr(model, "provider", None)) or (prefix if rest else "unknown")
    model_id = _text(getattr(model, "model", None)) or rest or dependency
    # The adapters keep their endpoint on their HTTP session.
    base_url = getattr(getattr(model, "http", None), "base_url", None)
    address, port = _server(base_url) if isinstance(base_url, str) else (None, None)
    return ModelInfo(dependency, provider, model_id, address, port)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _server(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url)
    if not parts.hostname:
        return None, None
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.hostname, port


def agent_models(agent: Agent | None) -> dict[str, Model]:
    if agent is None:
        return {}
    return {m.name: m for m in (agent.model, *agent.fallback_models)}


def otel_value(value: Any) -> AttributeValue | None:
    """An OpenTelemetry attribute value: primitives and homogeneous lists as they are,
    anything else as JSON text; None (and empty lists) are left out."""
    if value is None:
        return None
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        items = [v for v in value if v is not None]
        if not items:
            return None
        kinds = {type(v) for v in items}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return tuple(items)
    return json.dumps(value, default=str, ensure_ascii=False)


def event_attributes(
    type_: str, attributes: Mapping[str, Any], *, capture: bool
) -> dict[str, AttributeValue]:
    """An event's attributes as span-event attributes, content removed unless captured.
    Other text (a provider's error message, say) is masked where it looks like a key."""
    content = CONTENT_FIELDS.get(type_, frozenset())
    out: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if key in content and not capture:
            continue
        converted = otel_value(value)
        if isinstance(converted, str) and key not in content:
            converted = redact(converted)
        if converted is not None:
            out[key] = converted
    return out


def step_extras(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """orchestrion's own step attributes, under an `orchestrion.` prefix."""
    out: dict[str, AttributeValue] = {}
    if "step.seq" in attributes:
        out["orchestrion.step.seq"] = int(attributes["step.seq"])
    if attributes.get("idempotency_key"):
        out["orchestrion.idempotency_key"] = str(attributes["idempotency_key"])
    if "round" in attributes:
        out["orchestrion.step.round"] = int(attributes["round"])
    if attributes.get("effect"):
        out["orchestrion.tool.effect"] = str(attributes["effect"])
    for key, value in attributes.items():
        if key in _STEP_KEYS_MAPPED or key.startswith("gen_ai."):
            continue
        converted = otel_value(value)
        if converted is not None:
            out[f"orchestrion.{key}"] = converted
    return out


# ---- response attributes -----------------------------------------------------------------

_USAGE_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)


def response_attributes(response: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """A `model.response` event's facts (never its text)."""
    out: dict[str, AttributeValue] = {}
    if response.get("gen_ai.response.model"):
        out["gen_ai.response.model"] = str(response["gen_ai.response.model"])
    if response.get("gen_ai.response.id"):
        out["gen_ai.response.id"] = str(response["gen_ai.response.id"])
    reasons = [str(r) for r in response.get("gen_ai.response.finish_reasons") or () if r]
    if reasons:
        out["gen_ai.response.finish_reasons"] = tuple(reasons)
    for key in _USAGE_KEYS:
        if response.get(key) is not None:
            out[key] = int(response[key])
    if response.get("provider.request_id"):
        out["orchestrion.provider.request_id"] = str(response["provider.request_id"])
    return out


def usage(response: Mapping[str, Any]) -> dict[str, int]:
    """Token counts by gen_ai.token.type."""
    counts = {}
    for kind in ("input", "output"):
        value = response.get(f"gen_ai.usage.{kind}_tokens")
        if value is not None:
            counts[kind] = int(value)
    return counts


# ---- content, in the conventions' JSON shapes ----------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def output_messages(response: Mapping[str, Any]) -> str:
    """gen_ai.output.messages of a chat span. The event keeps the names of the tools the
    model called, not their arguments (those are on each execute_tool span)."""
    parts: list[dict[str, Any]] = []
    if response.get("text"):
        parts.append({"type": "text", "content": response["text"]})
    for name in response.get("tool_calls") or ():
        parts.append({"type": "tool_call", "name": name})
    reasons: Sequence[str] = response.get("gen_ai.response.finish_reasons") or ("stop",)
    return _json([{"role": "assistant", "parts": parts, "finish_reason": reasons[0]}])


def text_messages(role: str, text: str) -> str:
    return _json([{"role": role, "parts": [{"type": "text", "content": text}]}])


def system_instructions(text: str) -> str:
    return _json([{"type": "text", "content": text}])
