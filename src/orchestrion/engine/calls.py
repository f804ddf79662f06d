"""The two kinds of journaled call a turn makes, each through its dependency's resilience
pipeline: a model call ("chat {model}") and a tool call ("execute_tool {tool}").

Both run inside a journal step, so a recorded result is never asked for again; inside the
step the pipeline retries, honours Retry-After and the retry budget, consults the shared
circuit breaker, and saves its attempt count in the step's attempt journal, so a crash in
the middle of a backoff resumes with the count intact.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from orchestrion.errors import DeadlineExceeded, LeaseLost
from orchestrion.models.base import Model, complete
from orchestrion.models.messages import (
    Message,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
)
from orchestrion.observe.events import RunEmitter
from orchestrion.resilience.deadline import timeout as step_timeout
from orchestrion.resilience.errors import BreakerOpen
from orchestrion.resilience.fallback import Fallback, FallbackChain, alternative, cached
from orchestrion.resilience.pipeline import Attempt
from orchestrion.resilience.shared import StepAttemptJournal
from orchestrion.store.base import Store
from orchestrion.tools.arguments import ArgumentResult
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, render_result

if TYPE_CHECKING:
    from orchestrion.engine.agent import TurnContext
    from orchestrion.engine.journal import StepInfo

# How much of a model's text or a tool's result an event keeps (the journal keeps it all).
EVENT_TEXT_LIMIT = 2000
# Resilience events that say something went wrong (the trace marks them as errors).
_ERROR_EVENTS = frozenset({"retry.giveup", "budget.refused", "breaker.rejected", "fallback.failed"})


def clip(text: str | None) -> str | None:
    if text is None or len(text) <= EVENT_TEXT_LIMIT:
        return text
    return text[:EVENT_TEXT_LIMIT] + "…"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def run_sink(emitter: RunEmitter, span_id: str) -> Callable[[str, dict[str, Any]], None]:
    """Resilience events of one step become events of that step's span."""

    def sink(type_: str, attributes: dict[str, Any]) -> None:
        if (
            type_ == "retry.attempt"
            and attributes.get("attempt") == 1
            and attributes.get("outcome") == "success"
        ):
            return  # the common case says nothing the step's own span does not
        emitter.emit(
            type_,
            type_,
            parent_span_id=span_id,
            status="error" if type_ in _ERROR_EVENTS else None,
            attributes=_jsonable(attributes),
        )

    return sink


def _not_fatal(exc: BaseException) -> bool:
    """Errors a fallback may answer: not the turn's deadline, not a lost lease."""
    return not isinstance(exc, DeadlineExceeded | LeaseLost)


# ---- model calls -------------------------------------------------------------------------


def model_call(ctx: TurnContext, request: ModelRequest) -> Callable[[StepInfo], Awaitable[Any]]:
    agent, emitter = ctx.agent, ctx.emitter

    async def call(info: StepInfo) -> dict[str, Any]:
        sink = run_sink(emitter, info.span_id)
        streamed: list[str] = []

        def attempt_on(model: Model) -> Callable[[Attempt], Awaitable[ModelResponse]]:
            async def attempt(a: Attempt) -> ModelResponse:
                if streamed and a.hedge == 0:
                    # The text an earlier attempt streamed is void: tell live readers.
                    emitter.text_reset(a.number, parent_span_id=info.span_id)
                    streamed.clear()

                async def on_delta(delta: ModelDelta) -> None:
                    if isinstance(delta, TextDelta) and a.hedge == 0:
                        streamed.append(delta.text)
                        emitter.text(delta.text, parent_span_id=info.span_id)

                bounded = request
                if a.deadline is not None and (
                    request.deadline is None or a.deadline < request.deadline
                ):
                    bounded = request.model_copy(update={"deadline": a.deadline})
                return await complete(model, bounded, on_delta)

            return attempt

        def pipeline_for(model: Model) -> Any:
            return ctx.breakers.pipeline(
                f"model:{model.name}",
                retry=agent.retry,
                timeout=agent.model_timeout,
                hedge=agent.hedge,
                classifier=agent.classifier,
                on_event=sink,
            )

        store = ctx.journal.store
        cache_key = _cache_key(agent.model, request) if agent.cache_answers else None
        primary = pipeline_for(agent.model)
        options: list[Fallback[ModelResponse]] = [
            alternative(_bind(pipeline_for(m), attempt_on(m)), name=f"model:{m.name}")
            for m in agent.fallback_models
        ]
        if cache_key is not None:
            options.append(cached(_cache_lookup(store, cache_key), name="cached answer"))
        chain = (
            FallbackChain(
                *options, name=f"fallback:{agent.model.name}", handles=_not_fatal, on_event=sink
            )
            if options
            else None
        )
        journal = StepAttemptJournal(
            store,
            ctx.journal.lease,
            ctx.run_id,
            info.seq,
            pipeline=primary.name,
            fresh=not ctx.journal.may_have_attempts(info.seq),
        )
        response: ModelResponse = await primary.call(
            attempt_on(agent.model), journal=journal, fallback=chain
        )
        if cache_key is not None and response.finish_reason in ("stop", "tool_calls"):
            await store.cache_put(cache_key, response.model_dump(mode="json"))
        text = response.message.content or ""
        if "".join(streamed) != text:  # a hedge or a fallback won: stream its text instead
            emitter.text_reset(0, parent_span_id=info.span_id)
            emitter.text(text, parent_span_id=info.span_id)
        emitter.emit(
            "model.response",
            f"chat {response.model or agent.model.name}",
            parent_span_id=info.span_id,
            attributes={
                "gen_ai.response.model": response.model,
                "gen_ai.response.finish_reasons": [response.finish_reason],
                "gen_ai.usage.input_tokens": response.usage.input_tokens,
                "gen_ai.usage.output_tokens": response.usage.output_tokens,
                "provider.request_id": response.request_id,
                "text": clip(response.message.content),
                "tool_calls": [c.name for c in response.message.tool_calls],
            },
        )
        return response.model_dump(mode="json")

    return call


def _cache_key(model: Model, request: ModelRequest) -> str:
    """The same request to the same model (the deadline aside) gets the same key."""
    body = request.model_dump_json(exclude={"deadline"})
    return f"model:{model.name}:{hashlib.sha256(body.encode()).hexdigest()}"


def _cache_lookup(store: Store, key: str) -> Callable[[], Awaitable[ModelResponse | None]]:
    async def lookup() -> ModelResponse | None:
        value = await store.cache_get(key)
        return None if value is None else ModelResponse.model_validate(value)

    return lookup


def _bind(
    pipeline: Any, attempt: Callable[[Attempt], Awaitable[ModelResponse]]
) -> Callable[[], Awaitable[ModelResponse]]:
    async def run() -> ModelResponse:
        result: ModelResponse = await pipeline.call(attempt)
        return result

    return run


# ---- tool calls --------------------------------------------------------------------------


def tool_step(ctx: TurnContext, call: ToolCall, checked: ArgumentResult) -> Awaitable[Message]:
    """Run the tool with validated arguments as a journaled step."""
    tool = ctx.agent.registry.get(checked.tool_name)
    assert tool is not None and checked.arguments is not None  # executable results only
    arguments = checked.arguments

    async def execute(info: StepInfo) -> dict[str, Any]:
        content, is_error = await _execute_tool(ctx, tool, arguments, info)
        ctx.emitter.emit(
            "tool.result",
            f"execute_tool {tool.name}",
            parent_span_id=info.span_id,
            status="error" if is_error else "ok",
            attributes={"result": clip(content), "is_error": is_error},
        )
        return {"content": content, "is_error": is_error}

    async def run() -> Message:
        outcome: dict[str, Any] = await ctx.journal.step(
            f"execute_tool {tool.name}",
            execute,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool.name,
                "gen_ai.tool.call.id": call.id,
                "arguments": clip(call.arguments),
                "effect": tool.effect,
            },
            announce=True,
            effect=tool.effect,
        )
        return Message.tool_result(call, outcome["content"], is_error=outcome["is_error"])

    return run()


async def _execute_tool(
    ctx: TurnContext, tool: Tool, arguments: BaseModel, info: StepInfo
) -> tuple[str, bool]:
    """The tool's result text and whether it is an error. A tool's failure is reported to
    the model (which may recover); only the deadline and a lost lease end the turn."""
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
    pipeline = ctx.breakers.pipeline(
        f"tool:{tool.name}",
        retry=tool.retry,
        timeout=tool.timeout,
        breaker=tool.breaker,
        classifier=tool.classifier,
        on_event=run_sink(ctx.emitter, info.span_id),
    )
    journal = StepAttemptJournal(
        ctx.journal.store,
        ctx.journal.lease,
        ctx.run_id,
        info.seq,
        pipeline=pipeline.name,
        fresh=not ctx.journal.may_have_attempts(info.seq),
    )

    async def attempt(a: Attempt) -> Any:
        tool_ctx.deadline = a.deadline if a.deadline is not None else ctx.deadline
        return await tool.invoke(arguments, tool_ctx)

    started = time.monotonic()
    try:
        async with step_timeout(tool.step_timeout, name=f"tool:{tool.name}"):
            value = await pipeline.call(attempt, journal=journal)
    except (DeadlineExceeded, LeaseLost):
        raise
    except BreakerOpen as exc:
        return (
            f"Tool {tool.name!r} is unavailable right now ({exc}). "
            "Do not call it again in this turn.",
            True,
        )
    except TimeoutError:
        return f"Tool {tool.name!r} timed out after {time.monotonic() - started:.1f}s.", True
    except Exception as exc:  # the model hears of a tool's failure; the user never sees it raw
        return f"Tool {tool.name!r} failed: {type(exc).__name__}: {exc}", True
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
