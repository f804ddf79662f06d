"""A deterministic model for tests and the offline demo.

The reply is chosen from the request alone (by default: the number of assistant messages
since the last user message), never from hidden counters, so a turn resumed in another
process after a crash gets the same reply the dead process would have got.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrion.models.messages import (
    FinishDelta,
    FinishReason,
    ModelDelta,
    ModelRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    new_tool_call_id,
)


class ScriptedCall(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    # Raw argument text, sent as is: scripts can produce malformed arguments on purpose.
    arguments: str


class ScriptedReply(BaseModel):
    """One scripted model response: optional text, then optional tool calls."""

    model_config = ConfigDict(frozen=True)

    text: str | None = None
    calls: tuple[ScriptedCall, ...] = ()
    finish_reason: FinishReason | None = None


def say(text: str) -> ScriptedReply:
    """A reply with text only (a final answer)."""
    return ScriptedReply(text=text)


def call(name: str, _text: str | None = None, /, **arguments: Any) -> ScriptedReply:
    """A reply that calls one tool with JSON-encoded keyword arguments."""
    return ScriptedReply(
        text=_text, calls=(ScriptedCall(name=name, arguments=json.dumps(arguments)),)
    )


def calls(*replies: ScriptedReply, text: str | None = None) -> ScriptedReply:
    """Merge several single-call replies into one reply whose calls run concurrently."""
    merged = tuple(c for r in replies for c in r.calls)
    return ScriptedReply(text=text, calls=merged)


def raw_call(
    name: str, arguments: str, *, finish_reason: FinishReason | None = None
) -> ScriptedReply:
    """A reply whose tool-call arguments are sent exactly as given (for malformed input)."""
    return ScriptedReply(
        calls=(ScriptedCall(name=name, arguments=arguments),), finish_reason=finish_reason
    )


Script = Sequence[ScriptedReply] | Callable[[ModelRequest], ScriptedReply]


def turn_position(request: ModelRequest) -> int:
    """How many assistant messages the current turn already holds (since the last message
    of the human user; orchestrion's own corrections do not start a new turn)."""
    position = 0
    for message in reversed(request.messages):
        if message.role == "user" and not message.is_correction:
            break
        if message.role == "assistant":
            position += 1
    return position


class ScriptedModel:
    """A model that answers from a script.

    `script` is either a list of replies, indexed by the position in the current turn
    (the last entry repeats when the turn goes on longer), or a function of the request.
    `latency` delays each call (seconds) so a test can kill a process mid-turn;
    `chunk_delay` paces the text pieces like a real token stream.
    """

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        latency: float = 0.0,
        chunk_size: int = 12,
        chunk_delay: float = 0.0,
    ) -> None:
        if not callable(script) and not script:
            raise ValueError("ScriptedModel needs at least one reply")
        self.name = name
        self._script = script
        self.latency = latency
        self.chunk_size = max(1, chunk_size)
        self.chunk_delay = chunk_delay  # a pause between text pieces, like a real stream
        self.calls = 0  # how many times the model was actually called (tests count replay)

    async def aclose(self) -> None:
        """Nothing to release (the model protocol's close, for symmetry with HTTP models)."""

    def reply_for(self, request: ModelRequest) -> ScriptedReply:
        if callable(self._script):
            return self._script(request)
        replies = self._script
        return replies[min(turn_position(request), len(replies) - 1)]

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.calls += 1
        reply = self.reply_for(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        text = reply.text or ""
        for start in range(0, len(text), self.chunk_size):
            if start and self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
            yield TextDelta(text=text[start : start + self.chunk_size])
        for index, c in enumerate(reply.calls):
            # Ids are fresh on every call, like a provider's: the reply itself depends on
            # the request alone, but two calls (in one reply or across turns) never share
            # an id, and results are matched to calls by id.
            yield ToolCallDelta(
                index=index, id=new_tool_call_id(), name=c.name, arguments=c.arguments
            )
        prompt_chars = sum(len(m.content or "") for m in request.messages)
        reason = reply.finish_reason or ("tool_calls" if reply.calls else "stop")
        yield FinishDelta(
            reason=reason,
            usage=Usage(input_tokens=prompt_chars // 4 + 1, output_tokens=len(text) // 4 + 1),
            model=self.name,
        )
