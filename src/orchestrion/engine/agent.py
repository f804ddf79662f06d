"""The agent and its loop: model, then that response's tool calls concurrently, then the
model again, until a final answer. Every model call and tool call is a journaled step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pydantic_core
from pydantic import ValidationError

from orchestrion.engine.conversation import ConversationState
from orchestrion.engine.journal import Journal, StepInfo
from orchestrion.errors import TooManySteps
from orchestrion.models.base import Model, complete
from orchestrion.models.messages import (
    Message,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    Usage,
)
from orchestrion.observe.events import RunEmitter
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, ToolRegistry, render_result

DEFAULT_DEGRADATION = (
    "Sorry, I could not finish that request just now. Nothing was lost; please try again "
    "in a moment."
)

# How much of a model's text or a tool's result an event keeps (the journal keeps it all).
_EVENT_TEXT_LIMIT = 2000


@dataclass
class Agent:
    """What an agent is: a model, tools, instructions and the limits of one turn."""

    name: str
    model: Model
    tools: Iterable[Tool | Callable[..., Any]] = ()
    instructions: str | None = None
    max_steps: int = 12  # model calls per turn before the loop gives up
    turn_timeout: float = 300.0  # the whole turn's deadline, seconds
    conversation_ttl: float = 7 * 24 * 3600.0
    busy_policy: Literal["enqueue", "reject"] = "enqueue"
    degradation_message: str = DEFAULT_DEGRADATION
    registry: ToolRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = ToolRegistry(self.tools)


@dataclass
class TurnOutcome:
    answer: str
    new_messages: list[Message]
    usage: Usage
    model_calls: int


StateSetter = Callable[[ConversationState], Any]
EffectRecorder = Callable[[str, str, dict[str, Any]], Any]


@dataclass
class TurnContext:
    """What the loop needs from the run executor."""

    agent: Agent
    journal: Journal
    emitter: RunEmitter
    run_id: str
    conversation_id: str
    tenant: str
    deadline: float | None
    history: Sequence[Message]
    user_message: Message
    set_state: Callable[[ConversationState], Any]  # async
    record_effect: Callable[[str, str, dict[str, Any]], Any]  # async


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _EVENT_TEXT_LIMIT:
        return text
    return text[:_EVENT_TEXT_LIMIT] + "…"


async def run_turn(ctx: TurnContext) -> TurnOutcome:
    agent, journal, emitter = ctx.agent, ctx.journal, ctx.emitter
    preamble = [Message.system(agent.instructions)] if agent.instructions else []
    turn: list[Message] = [ctx.user_message]
    usage = Usage()
    specs = agent.registry.specs()

    for round_number in range(agent.max_steps):
        await ctx.set_state(ConversationState.STREAMING_RESPONSE)
        request = ModelRequest(
            messages=(*preamble, *ctx.history, *turn), tools=specs, deadline=ctx.deadline
        )
        response = await journal.step(
            f"chat {agent.model.name}",
            _model_call(agent.model, request, emitter),
            decode=ModelResponse.model_validate,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": agent.model.name,
                "round": round_number,
            },
            announce=True,
        )
        usage = usage + response.usage
        turn.append(response.message)
        calls = response.message.tool_calls
        if not calls:
            return TurnOutcome(
                answer=response.message.content or "",
                new_messages=turn,
                usage=usage,
                model_calls=round_number + 1,
            )
        await ctx.set_state(ConversationState.PROCESSING_TOOLS)
        truncated = response.finish_reason == "length"
        # Reserve the steps in call order, then run them concurrently.
        pending = [_tool_step(ctx, call, truncated) for call in calls]
        results = await asyncio.gather(*pending)
        turn.extend(results)
    raise TooManySteps(
        f"agent {agent.name!r} made {agent.max_steps} model calls without a final answer"
    )


def _model_call(
    model: Model, request: ModelRequest, emitter: RunEmitter
) -> Callable[[StepInfo], Any]:
    async def call(info: StepInfo) -> dict[str, Any]:
        async def on_delta(delta: ModelDelta) -> None:
            if isinstance(delta, TextDelta):
                emitter.ephemeral("text.delta", {"text": delta.text}, parent_span_id=info.span_id)

        response = await complete(model, request, on_delta)
        emitter.emit(
            "model.response",
            f"chat {model.name}",
            parent_span_id=info.span_id,
            attributes={
                "gen_ai.response.finish_reasons": [response.finish_reason],
                "gen_ai.usage.input_tokens": response.usage.input_tokens,
                "gen_ai.usage.output_tokens": response.usage.output_tokens,
                "text": _clip(response.message.content),
                "tool_calls": [c.name for c in response.message.tool_calls],
            },
        )
        return response.model_dump(mode="json")

    return call


def _tool_step(ctx: TurnContext, call: ToolCall, truncated: bool) -> Any:
    """Validate the call's arguments, then run the tool as a journaled step."""
    tool = ctx.agent.registry.get(call.name)

    async def execute(info: StepInfo) -> dict[str, Any]:
        content, is_error = await _execute_tool(ctx, tool, call, truncated, info)
        ctx.emitter.emit(
            "tool.result",
            f"execute_tool {call.name}",
            parent_span_id=info.span_id,
            status="error" if is_error else "ok",
            attributes={"result": _clip(content), "is_error": is_error},
        )
        return {"content": content, "is_error": is_error}

    async def run() -> Message:
        outcome: dict[str, Any] = await ctx.journal.step(
            f"execute_tool {call.name}",
            execute,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.id,
                "arguments": _clip(call.arguments),
                "effect": tool.effect if tool else None,
            },
            announce=True,
        )
        return Message.tool_result(call, outcome["content"], is_error=outcome["is_error"])

    return run()


async def _execute_tool(
    ctx: TurnContext, tool: Tool | None, call: ToolCall, truncated: bool, info: StepInfo
) -> tuple[str, bool]:
    if tool is None:
        available = ", ".join(ctx.agent.registry.names) or "none"
        return f"There is no tool {call.name!r}. Available tools: {available}.", True
    if truncated:
        return (
            f"Tool {call.name!r} was not run: your output stopped at the token limit, so its "
            "arguments may be incomplete. Send the call again, shorter.",
            True,
        )
    try:
        raw = pydantic_core.from_json(call.arguments or "{}")
        arguments = tool.args_model.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        return f"Tool {call.name!r}: invalid arguments: {exc}. Send the call again.", True
    tool_ctx = ToolContext(
        idempotency_key=info.idempotency_key,
        run_id=ctx.run_id,
        conversation_id=ctx.conversation_id,
        tenant=ctx.tenant,
        tool_name=tool.name,
        deadline=ctx.deadline,
        _record_effect=ctx.record_effect,
        _progress=_progress_reporter(ctx.emitter, info),
    )
    timeout = tool.timeout
    if ctx.deadline is not None:
        left = max(0.0, ctx.deadline - time.time())
        timeout = left if timeout is None else min(timeout, left)
    try:
        async with asyncio.timeout(timeout):
            value = await tool.invoke(arguments, tool_ctx)
    except TimeoutError:
        return f"Tool {call.name!r} timed out after {timeout:.1f}s.", True
    except Exception as exc:  # the model hears of a tool's failure; the user never sees it raw
        return f"Tool {call.name!r} failed: {type(exc).__name__}: {exc}", True
    return render_result(value), False


def _progress_reporter(emitter: RunEmitter, info: StepInfo) -> Callable[[str, float | None], Any]:
    async def report(message: str, fraction: float | None) -> None:
        emitter.emit(
            "tool.progress",
            info.name,
            parent_span_id=info.span_id,
            attributes={"message": message, "fraction": fraction},
        )

    return report
