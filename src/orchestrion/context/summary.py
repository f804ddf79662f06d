"""Summarisation as a journaled model step.

The step asks the summarising model to fold the messages that fell out of the window into
the running summary, stores the result with the conversation (`Store.save_summary`, keyed
by run and label), and returns it; the journal records it like any step. So:

- a later turn reuses the stored summary, and extends it only with what falls out next;
- a crash before the step was recorded re-executes it, and the re-execution finds the
  summary already stored under its run and label (a crash after the save) instead of
  asking the model again: the summary of a stretch is made once;
- a step that fails (the model errs after its retries, or answers nothing) is recorded
  as failed, and the turn goes on with the plain window; the trace says so
  (`context.summary.failed`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrion.context.load import Stored
from orchestrion.context.policy import ContextPolicy
from orchestrion.engine.calls import run_sink
from orchestrion.models.base import Model, complete
from orchestrion.models.messages import Message, ModelRequest, ModelResponse
from orchestrion.resilience.pipeline import Attempt
from orchestrion.resilience.shared import StepAttemptJournal
from orchestrion.store.base import SummaryRecord

if TYPE_CHECKING:
    from orchestrion.engine.agent import TurnContext
    from orchestrion.engine.journal import StepInfo

RENDER_LIMIT = 4000  # characters of one message shown to the summariser


class SummaryFailed(Exception):
    """The summarising model gave no usable summary."""


def summary_message(summary: SummaryRecord) -> Message:
    """How a summary goes into a request: a system message standing for what it covers."""
    return Message.system(
        f"Summary of the earlier conversation (messages {summary.first_index}-"
        f"{summary.last_index}, no longer shown):\n{summary.text}"
    )


def _render(message: Message) -> str:
    text = (message.content or "").strip()
    if len(text) > RENDER_LIMIT:
        text = text[:RENDER_LIMIT] + " [...]"
    if message.role == "tool":
        return f"tool {message.name or ''} answered: {text}".replace("  ", " ")
    lines = [f"{message.role}: {text}"] if text else []
    lines += [f"{message.role} called {c.name}({c.arguments})" for c in message.tool_calls]
    return "\n".join(lines)


def summary_request(
    policy: ContextPolicy, previous: SummaryRecord | None, fold: Sequence[Stored]
) -> ModelRequest:
    """What the summarising model is asked: the summary so far and the messages to add."""
    so_far = previous.text if previous is not None else "(none yet)"
    new = "\n".join(_render(s.message) for s in fold)
    return ModelRequest(
        messages=(
            Message.system(policy.instructions),
            Message.user(f"Summary so far:\n{so_far}\n\nNew messages:\n{new}"),
        ),
        max_tokens=policy.summary_tokens,
    )


def summariser(ctx: TurnContext, policy: ContextPolicy) -> Model:
    return policy.model if policy.model is not None else ctx.agent.model


async def summarize_step(
    ctx: TurnContext,
    policy: ContextPolicy,
    *,
    label: str,
    previous: SummaryRecord | None,
    fold: Sequence[Stored],
    made: SummaryRecord | None,
    pinned_end: int,
) -> SummaryRecord:
    """Run the journaled summarisation of `fold` into `previous` (`made`: the summary this
    run already stored under `label`, when it resumes). Raises StepFailed if it failed."""
    model = summariser(ctx, policy)
    if made is not None:
        first, last, count = made.first_index, made.last_index, None
    else:
        first = previous.first_index if previous is not None else fold[0].index
        last, count = fold[-1].index, len(fold)

    async def execute(info: StepInfo) -> dict[str, Any]:
        if made is not None:
            return dataclasses.asdict(made)  # stored by an attempt that crashed before its record
        response = await _ask(ctx, model, summary_request(policy, previous, fold), info)
        text = (response.message.content or "").strip()
        if not text:
            raise SummaryFailed(f"model {model.name} answered no summary")
        record = SummaryRecord(
            conversation_id=ctx.conversation_id,
            run_id=ctx.run_id,
            label=label,
            first_index=first,
            last_index=last,
            text=text,
            model=response.model or model.name,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            created_at=time.time(),
        )
        # Pinned messages are never dropped: they are sent verbatim every turn.
        drop = (max(first, pinned_end), last) if policy.retain == "summary" else None
        saved = await ctx.journal.store.save_summary(ctx.journal.lease, record, drop=drop)
        ctx.emitter.emit(
            "model.response",
            f"chat {saved.model}",
            parent_span_id=info.span_id,
            attributes={
                "gen_ai.response.model": response.model,
                "gen_ai.response.finish_reasons": [response.finish_reason],
                "gen_ai.usage.input_tokens": response.usage.input_tokens,
                "gen_ai.usage.output_tokens": response.usage.output_tokens,
                "provider.request_id": response.request_id,
                "text": saved.text[:2000],
            },
        )
        return dataclasses.asdict(saved)

    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model.name,
        "context.label": label,
        "context.summary.first_index": first,
        "context.summary.last_index": last,
    }
    if count is not None:
        attributes["context.summary.folded_count"] = count
    value: dict[str, Any] = await ctx.journal.step(
        f"summarize {model.name}", execute, attributes=attributes, announce=True
    )
    return SummaryRecord(**value)


async def _ask(
    ctx: TurnContext, model: Model, request: ModelRequest, info: StepInfo
) -> ModelResponse:
    """One summarisation call through the model's resilience pipeline (retries, breaker,
    budget, per-attempt timeout; the attempt count survives a crash). Not streamed: a
    summary is not for the user's eyes."""
    agent = ctx.agent
    pipeline = ctx.breakers.pipeline(
        f"model:{model.name}",
        retry=agent.retry,
        timeout=agent.model_timeout,
        classifier=agent.classifier,
        on_event=run_sink(ctx.emitter, info.span_id),
    )
    attempts = StepAttemptJournal(
        ctx.journal.store, ctx.journal.lease, ctx.run_id, info.seq, pipeline=pipeline.name
    )
    deadline = ctx.deadline

    async def attempt(a: Attempt) -> ModelResponse:
        bounded = request.model_copy(update={"deadline": deadline})
        if a.deadline is not None and (deadline is None or a.deadline < deadline):
            bounded = request.model_copy(update={"deadline": a.deadline})
        return await complete(model, bounded)

    response: ModelResponse = await pipeline.call(attempt, journal=attempts)
    return response
