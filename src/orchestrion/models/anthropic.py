"""Anthropic Messages API, streamed.

Built on httpx, not the `anthropic` SDK: see orchestrion.models.http for why. The adapter
never retries; an `error` event after HTTP 200 (e.g. overloaded_error) is raised as the
same class the equivalent status code would give.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from orchestrion.errors import MalformedResponse
from orchestrion.models.http import (
    HTTPSession,
    cut_stream,
    error_from_stream,
    is_event_stream,
    parse_json_event,
    request_id_from,
)
from orchestrion.models.messages import (
    FinishDelta,
    FinishReason,
    Message,
    ModelDelta,
    ModelRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)

DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# The Messages API requires max_tokens; used when the request does not set one.
DEFAULT_MAX_TOKENS = 4096

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def _tool_input(arguments: str) -> dict[str, Any]:
    """tool_use.input must be an object. History may hold raw, malformed arguments (the
    argument pipeline repairs before executing, not in the transcript): those are sent
    as an empty object rather than failing the whole request."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_anthropic_messages(
    messages: tuple[Message, ...],
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system prompt, messages). Tool results become user-turn tool_result blocks, and
    consecutive same-role turns are merged, as the API requires strict alternation."""
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "system":
            if m.content:
                system_parts.append(m.content)
        elif m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content or "",
            }
            if m.is_error:
                block["is_error"] = True
            append("user", [block])
        elif m.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.name,
                        "input": _tool_input(c.arguments),
                    }
                )
            if blocks:
                append("assistant", blocks)
        else:
            append("user", [{"type": "text", "text": m.content or ""}])
    return ("\n\n".join(system_parts) or None), out


def build_payload(
    model: str, request: ModelRequest, *, stream: bool = True, default_max_tokens: int
) -> dict[str, Any]:
    system, messages = to_anthropic_messages(request.messages)
    payload: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens or default_max_tokens,
        "stream": stream,
    }
    if system:
        payload["system"] = system
    if request.tools:
        payload["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    return payload


def _int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return int(value) if isinstance(value, int | float) else 0


def _input_tokens(raw: Mapping[str, Any]) -> int:
    # Cached prompt tokens are still prompt tokens the call consumed.
    return (
        _int(raw, "input_tokens")
        + _int(raw, "cache_creation_input_tokens")
        + _int(raw, "cache_read_input_tokens")
    )


class AnthropicModel:
    """An Anthropic Messages endpoint (or anything speaking its protocol)."""

    provider = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_ANTHROPIC_BASE_URL,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        version: str = ANTHROPIC_VERSION,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.name = name or f"anthropic:{model}"
        self.default_max_tokens = max_tokens
        sent: dict[str, str] = {"accept": "text/event-stream", "anthropic-version": version}
        if api_key:
            sent["x-api-key"] = api_key
        sent.update(headers or {})
        # Anthropic's base URL convention excludes /v1 (the SDK appends it per path).
        self.http = HTTPSession(
            provider=self.provider,
            base_url=base_url,
            headers=sent,
            timeout=timeout,
            client=client,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the HTTP client's connections (idempotent; a later call reconnects)."""
        await self.http.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        payload = build_payload(self.model, request, default_max_tokens=self.default_max_tokens)
        async with self.http.post_stream("/v1/messages", payload, request.deadline) as resp:
            if is_event_stream(resp):
                async for delta in self._from_sse(resp, request.deadline):
                    yield delta
            else:
                body = await self.http.read_json(resp, request.deadline)
                for delta in self._from_message(body, resp):
                    yield delta

    async def _from_sse(
        self, resp: httpx.Response, deadline: float | None
    ) -> AsyncIterator[ModelDelta]:
        input_tokens = 0
        output_tokens = 0
        model_name: str | None = None
        stop: FinishReason | None = None
        # content block index -> tool-call index (tool calls are numbered 0, 1, ... in order)
        tool_index: dict[int, int] = {}
        started = False
        events = self.http.iter_sse(resp, deadline)
        async for event in events:
            if not event.data.strip():
                continue
            body = parse_json_event(event.data, resp, provider=self.provider)
            if not isinstance(body, Mapping):
                raise MalformedResponse(
                    f"stream event is not an object: {event.data[:80]!r}", provider=self.provider
                )
            kind = body.get("type") or event.event
            if kind == "error":
                raise error_from_stream(body, resp.headers, provider=self.provider)
            if kind == "ping":
                continue
            if kind == "message_start":
                started = True
                message = body.get("message") or {}
                model_name = message.get("model") or model_name
                usage = message.get("usage") or {}
                input_tokens = _input_tokens(usage)
                output_tokens = _int(usage, "output_tokens")
            elif kind == "content_block_start":
                block = body.get("content_block") or {}
                index = int(body.get("index", 0))
                if block.get("type") == "tool_use":
                    position = len(tool_index)
                    tool_index[index] = position
                    yield ToolCallDelta(index=position, id=block.get("id"), name=block.get("name"))
                    # Some servers put a complete input here instead of streaming it.
                    if block.get("input"):
                        yield ToolCallDelta(index=position, arguments=json.dumps(block["input"]))
                elif block.get("type") == "text" and block.get("text"):
                    yield TextDelta(text=block["text"])
            elif kind == "content_block_delta":
                delta = body.get("delta") or {}
                dtype = delta.get("type")
                if dtype == "text_delta" and delta.get("text"):
                    yield TextDelta(text=delta["text"])
                elif dtype == "input_json_delta":
                    index = int(body.get("index", 0))
                    if index not in tool_index:
                        raise MalformedResponse(
                            f"input_json_delta for unknown block {index}", provider=self.provider
                        )
                    if delta.get("partial_json"):
                        yield ToolCallDelta(
                            index=tool_index[index], arguments=delta["partial_json"]
                        )
                # thinking / signature / citation deltas carry nothing the engine uses yet
            elif kind == "message_delta":
                delta = body.get("delta") or {}
                if delta.get("stop_reason"):
                    stop = _STOP.get(str(delta["stop_reason"]), "stop")
                usage = body.get("usage") or {}
                # message_delta usage is cumulative; newer servers repeat input counts here
                output_tokens = max(output_tokens, _int(usage, "output_tokens"))
                input_tokens = max(input_tokens, _input_tokens(usage))
            elif kind == "message_stop":
                if not started or stop is None:
                    raise cut_stream(
                        resp, provider=self.provider, what="message_start and a stop_reason"
                    )
                await self.http.drain(events, deadline)
                yield FinishDelta(
                    reason=stop,
                    usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                    model=model_name,
                    request_id=request_id_from(resp.headers),
                )
                return
        raise cut_stream(resp, provider=self.provider, what="message_stop")

    def _from_message(self, body: Any, resp: httpx.Response) -> list[ModelDelta]:
        """A non-streamed Message (a proxy that ignored `stream: true`)."""
        if isinstance(body, Mapping) and body.get("type") == "error":
            raise error_from_stream(body, resp.headers, provider=self.provider)
        if not isinstance(body, Mapping) or not isinstance(body.get("content"), list):
            raise MalformedResponse(
                "message without a content list",
                provider=self.provider,
                request_id=request_id_from(resp.headers),
            )
        deltas: list[ModelDelta] = []
        position = 0
        for block in body["content"]:
            if block.get("type") == "text" and block.get("text"):
                deltas.append(TextDelta(text=block["text"]))
            elif block.get("type") == "tool_use":
                deltas.append(
                    ToolCallDelta(
                        index=position,
                        id=block.get("id"),
                        name=block.get("name"),
                        arguments=json.dumps(block.get("input") or {}),
                    )
                )
                position += 1
        usage = body.get("usage") or {}
        deltas.append(
            FinishDelta(
                reason=_STOP.get(str(body.get("stop_reason") or "end_turn"), "stop"),
                usage=Usage(
                    input_tokens=_input_tokens(usage), output_tokens=_int(usage, "output_tokens")
                ),
                model=body.get("model"),
                request_id=request_id_from(resp.headers),
            )
        )
        return deltas
