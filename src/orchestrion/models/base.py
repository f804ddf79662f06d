"""The model seam: one method, `stream(request)`, yielding normalised deltas.

Like httpx's transport, a single narrow method makes every provider, the scripted model
and any test double interchangeable. Assembling deltas into a response is shared here so
no adapter re-implements it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
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
)


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
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"])
            for i, c in sorted(self._calls.items())
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


__all__ = ["Model", "ModelDelta", "ResponseAssembler", "Usage", "complete"]
