"""OpenAI-compatible Chat Completions (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, ...).

Built on httpx, not the `openai` SDK: see orchestrion.models.http for why. The adapter
never retries; a failure is raised once, normalised, for the resilience layer to judge.
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

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",  # some compatible servers
}


def to_openai_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content or "",
        }
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in message.tool_calls
        ]
    elif message.content is None:
        out["content"] = ""
    return out


def build_payload(
    model: str,
    request: ModelRequest,
    *,
    stream: bool = True,
    include_usage: bool = True,
    max_tokens_field: str = "max_tokens",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "messages": [to_openai_message(m) for m in request.messages],
        "stream": stream,
    }
    if stream and include_usage:
        payload["stream_options"] = {"include_usage": True}
    if request.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.max_tokens is not None:
        payload[max_tokens_field] = request.max_tokens
    return payload


def arguments_text(raw: Any) -> str:
    """A tool call's `arguments` as the JSON text the rest of orchestrion expects. The
    protocol sends a string; some compatible servers send the JSON object itself."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False)


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
    )


class OpenAIModel:
    """A Chat Completions endpoint.

    `max_tokens_field`: OpenAI's newest models want "max_completion_tokens"; most
    compatible servers only know "max_tokens" (the default). `include_usage=False` for
    servers that reject `stream_options`. `headers` are sent on every request.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        name: str | None = None,
        organization: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        include_usage: bool = True,
        max_tokens_field: str = "max_tokens",
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.name = name or f"openai:{model}"
        self.include_usage = include_usage
        self.max_tokens_field = max_tokens_field
        sent: dict[str, str] = {"accept": "text/event-stream"}
        if api_key:
            sent["authorization"] = f"Bearer {api_key}"
        if organization:
            sent["openai-organization"] = organization
        sent.update(headers or {})
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
        payload = build_payload(
            self.model,
            request,
            include_usage=self.include_usage,
            max_tokens_field=self.max_tokens_field,
        )
        async with self.http.post_stream("/chat/completions", payload, request.deadline) as resp:
            if is_event_stream(resp):
                async for delta in self._from_sse(resp, request.deadline):
                    yield delta
            else:
                body = await self.http.read_json(resp, request.deadline)
                for delta in self._from_completion(body, resp):
                    yield delta

    async def _from_sse(
        self, resp: httpx.Response, deadline: float | None
    ) -> AsyncIterator[ModelDelta]:
        finish: FinishReason | None = None
        usage: Usage | None = None
        model_name: str | None = None
        # The provider's call id per index, so a repeated id on a later piece is not news.
        seen_ids: dict[int, str] = {}
        done = False
        events = self.http.iter_sse(resp, deadline)
        async for event in events:
            data = event.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                done = True
                break
            chunk = parse_json_event(data, resp, provider=self.provider)
            if not isinstance(chunk, Mapping):
                raise MalformedResponse(
                    f"stream chunk is not an object: {data[:80]!r}", provider=self.provider
                )
            if "error" in chunk or chunk.get("object") == "error" or event.event == "error":
                raise error_from_stream(chunk, resp.headers, provider=self.provider)
            model_name = chunk.get("model") or model_name
            usage = _usage(chunk.get("usage")) or usage
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if text:
                    yield TextDelta(text=text)
                for piece in delta.get("tool_calls") or ():
                    index = int(piece.get("index", 0))
                    fn = piece.get("function") or {}
                    call_id = str(piece["id"]) if piece.get("id") else None
                    new_id = call_id if call_id and seen_ids.get(index) != call_id else None
                    if new_id:
                        seen_ids[index] = new_id
                    name = fn.get("name") or None
                    arguments = arguments_text(fn.get("arguments"))
                    if new_id or name or arguments:
                        yield ToolCallDelta(index=index, id=new_id, name=name, arguments=arguments)
                reason = choice.get("finish_reason")
                if reason:
                    finish = _FINISH.get(str(reason), "stop")
        if finish is None:
            what = "a finish_reason" if not done else "a finish_reason ([DONE] came first)"
            raise cut_stream(resp, provider=self.provider, what=what)
        if done:
            await self.http.drain(events, deadline)
        # A stream cut after finish_reason but before [DONE] lost at most the usage chunk:
        # the answer itself is complete, so it is accepted.
        yield FinishDelta(
            reason=finish,
            usage=usage or Usage(),
            model=model_name,
            request_id=request_id_from(resp.headers),
        )

    def _from_completion(self, body: Any, resp: httpx.Response) -> list[ModelDelta]:
        """A non-streamed chat.completion (a server that ignored `stream: true`)."""
        if isinstance(body, Mapping) and ("error" in body or body.get("object") == "error"):
            raise error_from_stream(body, resp.headers, provider=self.provider)
        try:
            choice = body["choices"][0]
            message = choice["message"]
            reason = _FINISH.get(str(choice.get("finish_reason") or "stop"), "stop")
        except (KeyError, IndexError, TypeError) as exc:
            raise MalformedResponse(
                "chat.completion without choices[0].message",
                provider=self.provider,
                request_id=request_id_from(resp.headers),
            ) from exc
        deltas: list[ModelDelta] = []
        if message.get("content"):
            deltas.append(TextDelta(text=message["content"]))
        for index, c in enumerate(message.get("tool_calls") or ()):
            fn = c.get("function") or {}
            deltas.append(
                ToolCallDelta(
                    index=index,
                    id=str(c["id"]) if c.get("id") else None,
                    name=fn.get("name"),
                    arguments=arguments_text(fn.get("arguments")),
                )
            )
        deltas.append(
            FinishDelta(
                reason=reason,
                usage=_usage(body.get("usage")) or Usage(),
                model=body.get("model"),
                request_id=request_id_from(resp.headers),
            )
        )
        return deltas
