"""Normalised messages, tool calls and streaming deltas shared by every provider.

Every provider adapter translates its wire format into these types and nothing else, so
the engine, the journal and the argument pipeline never see provider-specific shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrion.ids import random_hex

Role = Literal["system", "user", "assistant", "tool"]

# Why the model stopped. "length" means the output was cut at the token limit: tool
# arguments from such a response are never executed.
FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "error"]


CORRECTION_AUTHOR = "orchestrion"


def new_tool_call_id() -> str:
    """A fresh tool-call id, unique like a provider's ("call_" and 24 random hex digits):
    results are matched to calls by id, so two calls must never share one."""
    return f"call_{random_hex(24)}"


class ToolCall(BaseModel):
    """A tool call as the model produced it. `arguments` stays raw text: repairing and
    validating it is the argument pipeline's job, not the provider's."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = ""


class Message(BaseModel):
    """One message of a conversation, in a provider-neutral shape."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    # For role == "tool": which call this answers, and whether it reports an error.
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=text)

    @classmethod
    def correction(cls, text: str) -> Message:
        """A message orchestrion itself sends the model (e.g. a re-ask), in the user role
        because every provider accepts that; `name` tells it apart from the human."""
        return cls(role="user", content=text, name=CORRECTION_AUTHOR)

    @property
    def is_correction(self) -> bool:
        return self.role == "user" and self.name == CORRECTION_AUTHOR

    @classmethod
    def assistant(cls, text: str | None, tool_calls: tuple[ToolCall, ...] = ()) -> Message:
        return cls(role="assistant", content=text, tool_calls=tool_calls)

    @classmethod
    def tool_result(cls, call: ToolCall, content: str, *, is_error: bool = False) -> Message:
        return cls(
            role="tool", content=content, tool_call_id=call.id, name=call.name, is_error=is_error
        )


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class ToolSpec(BaseModel):
    """What the model is told about a tool: a name, a description, a JSON schema."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ModelRequest(BaseModel):
    """Everything one model call needs. `deadline` is an absolute `time.time()` value the
    adapter must not outlive (None: no deadline)."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    deadline: float | None = None


# ---- streaming deltas: the one thing a model adapter yields ----------------------------


class TextDelta(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["text"] = "text"
    text: str


class ToolCallDelta(BaseModel):
    """A piece of a tool call. Pieces with the same `index` belong to one call; `id` and
    `name` arrive on the first piece, `arguments` is appended piece by piece."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_call"] = "tool_call"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class FinishDelta(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["finish"] = "finish"
    reason: FinishReason
    usage: Usage = Usage()
    model: str | None = None
    request_id: str | None = None


ModelDelta = TextDelta | ToolCallDelta | FinishDelta


class ModelResponse(BaseModel):
    """A whole model response, assembled from its deltas. This is what the journal records."""

    model_config = ConfigDict(frozen=True)

    message: Message
    finish_reason: FinishReason
    usage: Usage = Usage()
    model: str | None = None
    request_id: str | None = None
