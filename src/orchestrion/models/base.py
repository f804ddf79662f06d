"""The model seam: one method, `stream(request)`, yielding normalised deltas.

Like httpx's transport, a single narrow method makes every provider, the scripted model
and any test double interchangeable. Assembling deltas into a response is shared here so
no adapter re-implements it.

A model may also hold resources (an HTTP client's connections): then it has
`async def aclose()`, idempotent, and whoever built the model closes it when done
(`close_models()`); a model stays usable after `aclose()` (its client is made again on
the next call). The built-in adapters and the scripted model all have one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, runtime_checkable

from orchestrion.errors import MalformedResponse
from orchestrion.models.messages import (
    FinishDelta,
    FinishReason,
    Message,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_tool_call_id,
)

log = logging.getLogger("orchestrion.models")


@runtime_checkable
class Model(Protocol):
    """A chat model. `name` identifies the dependency (for traces, breakers and budgets)."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        """Yield text and tool-call deltas, ending with exactly one FinishDelta."""
        ...


class ResponseAssembler:
    """Accumulates deltas into a ModelResponse (tool-call pieces are joined by index)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self.finish: FinishDelta | None = None

    def add(self, delta: ModelDelta) -> None:
        if isinstance(delta, TextDelta):
            self._text.append(delta.text)
        elif isinstance(delta, ToolCallDelta):
            call = self._calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.name:
                call["name"] = delta.name
            call["arguments"] += delta.arguments
        else:
            self.finish = delta

    def response(self) -> ModelResponse:
        if self.finish is None:
            raise MalformedResponse("model stream ended without a finish reason")
        calls = tuple(
            # A provider that sent no id still gets distinct ones (results match by id).
            ToolCall(id=c["id"] or new_tool_call_id(), name=c["name"], arguments=c["arguments"])
            for _, c in sorted(self._calls.items())
        )
        text = "".join(self._text) or None
        reason: FinishReason = self.finish.reason
        if calls and reason == "stop":
            reason = "tool_calls"
        return ModelResponse(
            message=Message.assistant(text, calls),
            finish_reason=reason,
            usage=self.finish.usage,
            model=self.finish.model,
            request_id=self.finish.request_id,
        )


async def complete(
    model: Model,
    request: ModelRequest,
    on_delta: Callable[[ModelDelta], Awaitable[None]] | None = None,
) -> ModelResponse:
    """Run one streamed model call to the end, handing each delta to `on_delta`."""
    assembler = ResponseAssembler()
    async for delta in model.stream(request):
        assembler.add(delta)
        if on_delta is not None:
            await on_delta(delta)
    return assembler.response()


async def close_models(models: Iterable[object]) -> None:
    """Close every model that holds resources (`aclose()`), each once, all of them even if
    one fails (that one is logged). For the runtime's shutdown: after the last call."""
    seen: set[int] = set()
    for model in models:
        aclose = getattr(model, "aclose", None)
        if aclose is None or id(model) in seen:
            continue
        seen.add(id(model))
        try:
            await aclose()
        except Exception as exc:
            log.warning("closing model %s failed: %s", getattr(model, "name", model), exc)


__all__ = ["Model", "ModelDelta", "ResponseAssembler", "Usage", "close_models", "complete"]
