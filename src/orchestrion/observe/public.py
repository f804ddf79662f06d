"""Typed events: what `Orchestrion.stream`, `events`, `follow` and `subscribe` yield, and
what the service sends as Server-Sent Events.

The store keeps each event as a row (`EventRecord`: a type string and a JSON payload).
At the public boundary a row becomes one small frozen pydantic model, chosen by its type:

    async for event in orx.stream("support", "Hello"):
        match event:
            case TextDelta(text=text):
                print(text, end="")
            case ToolCallStarted(tool_name=name, arguments=arguments):
                print(f"-> {name}({arguments})")
            case RunFinished(status=status):
                print("\\n", status)

Every event keeps the common fields of the row (`run_id`, `seq`, `type`, `name`,
`trace_id`, `span_id`, `parent_span_id`, `start`, `end`, `latency_ms`) and the raw
payload (`attributes`); its own fields are read from that payload. A type this version
does not know (or a payload that does not fit its class) becomes an `OtherEvent`, never
an error: new event types never break a consumer.

`model_dump(mode="json")` of an event is the `data` of its SSE frame, and
`parse_event(data)` turns such a JSON object back into the typed event.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypeAlias

from pydantic import AliasPath, BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrion.engine.conversation import ConversationState
from orchestrion.store.base import EventRecord, RunStatus

log = logging.getLogger("orchestrion.events")

# What kind of work a step is: a model call, a tool call, or something else the engine
# journals (a summary, a compensation, ...).
StepKind = Literal["model", "tool", "other"]
BreakerState = Literal["closed", "open", "half_open"]
_STEP_KINDS: dict[str, StepKind] = {"chat": "model", "execute_tool": "tool"}
_TOOL_SPAN_PREFIX = "execute_tool "


def _attr(key: str, default: Any = ...) -> Any:
    """A field read from the event's payload (`attributes[key]`); required without a
    default."""
    return Field(default=default, validation_alias=AliasPath("attributes", key))


class BaseEvent(BaseModel):
    """The fields every event has (those of the stored row)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    run_id: str
    seq: int = Field(description="The run's event sequence number (0: live-only text).")
    type: str
    name: str = Field(description="The span or event name, e.g. 'execute_tool lookup'.")
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start: float
    end: float | None = None
    latency_ms: float | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="The raw payload.")


class _StepEvent(BaseEvent):
    """The fields of a step's start and end."""

    kind: StepKind
    step: int = _attr("step.seq")
    idempotency_key: str = _attr("idempotency_key")
    model: str | None = _attr("gen_ai.request.model", None)
    tool_name: str | None = _attr("gen_ai.tool.name", None)

    @model_validator(mode="before")
    @classmethod
    def _kind_of_step(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data:
            attributes = data.get("attributes")
            operation = (
                attributes.get("gen_ai.operation.name") if isinstance(attributes, dict) else ""
            )
            return {**data, "kind": _STEP_KINDS.get(str(operation), "other")}
        return data


class _ToolSpanEvent(BaseEvent):
    """An event inside a tool call's span: the tool's name is in the span's name."""

    tool_name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _tool_from_span_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tool_name" not in data:
            name = data.get("name")
            if isinstance(name, str) and name.startswith(_TOOL_SPAN_PREFIX):
                return {**data, "tool_name": name.removeprefix(_TOOL_SPAN_PREFIX)}
        return data


# ---- the run ---------------------------------------------------------------------------


class RunQueued(BaseEvent):
    """The turn was submitted (always seq 1)."""

    type: Literal["run.queued"] = "run.queued"
    conversation_id: str = _attr("conversation_id")
    agent: str = _attr("agent")
    traceparent: str | None = _attr("traceparent", None)


class RunStarted(BaseEvent):
    """A worker claimed the run and starts it (opens the run's span)."""

    type: Literal["run.started"] = "run.started"
    agent: str = _attr("gen_ai.agent.name")
    conversation_id: str = _attr("conversation_id")
    owner: str = _attr("owner")
    epoch: int = _attr("epoch")


class RunResumed(BaseEvent):
    """Another owner continues the run from its journal (after a crash or a hand-back)."""

    type: Literal["run.resumed"] = "run.resumed"
    owner: str = _attr("owner")
    epoch: int = _attr("epoch")
    recorded_steps: int = _attr("recorded_steps", 0)


class RunError(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    message: str = ""


class RunFinished(BaseEvent):
    """The run ended; it is durable. The last event of every run."""

    type: Literal["run.finished"] = "run.finished"
    status: RunStatus = _attr("run.status")
    answer: str = _attr("answer", "")
    error: RunError | None = None
    input_tokens: int | None = _attr("gen_ai.usage.input_tokens", None)
    output_tokens: int | None = _attr("gen_ai.usage.output_tokens", None)

    @model_validator(mode="before")
    @classmethod
    def _error(cls, data: Any) -> Any:
        if isinstance(data, dict) and "error" not in data:
            attributes = data.get("attributes") or {}
            if isinstance(attributes, dict) and attributes.get("error.type"):
                error = {
                    "type": attributes["error.type"],
                    "message": attributes.get("error.message") or "",
                }
                return {**data, "error": error}
        return data


class StateChanged(BaseEvent):
    """The conversation moved to another state."""

    type: Literal["state.changed"] = "state.changed"
    from_state: ConversationState = _attr("from")
    to_state: ConversationState = _attr("to")


# ---- steps -----------------------------------------------------------------------------


class StepStarted(_StepEvent):
    """A journaled step (a model call, a tool call, ...) starts executing; its span is
    `span_id`. A tool call's start is a `ToolCallStarted`, a subclass."""

    type: Literal["step.started"] = "step.started"


class ToolCallStarted(StepStarted):
    """A tool call starts executing, with arguments that were parsed and validated."""

    kind: Literal["tool"] = "tool"
    tool_name: str = _attr("gen_ai.tool.name")
    call_id: str | None = _attr("gen_ai.tool.call.id", None)
    arguments: str | None = _attr("arguments", None)
    effect: str | None = _attr("effect", None)


class StepFinished(_StepEvent):
    """A step ended and its outcome is journaled (closes the step's span)."""

    type: Literal["step.finished"] = "step.finished"
    status: Literal["ok", "error"]
    error_type: str | None = _attr("error.type", None)


class TextDelta(BaseEvent):
    """Text of the model's answer, in order. Live streams yield every token as it comes
    (seq 0); stored events hold the same text in coalesced chunks. `parent_span_id` is
    the model step's span."""

    type: Literal["text.delta"] = "text.delta"
    text: str = _attr("text")


class TextReset(BaseEvent):
    """The text streamed so far in the step `parent_span_id` is void (a retry, a hedge or
    a fallback answers instead): discard it."""

    type: Literal["text.reset"] = "text.reset"
    attempt: int | None = _attr("attempt", None)


class ModelResponded(BaseEvent):
    """A model call's response (inside its step's span)."""

    type: Literal["model.response"] = "model.response"
    model: str | None = _attr("gen_ai.response.model", None)
    finish_reasons: list[str] = _attr("gen_ai.response.finish_reasons", [])
    input_tokens: int | None = _attr("gen_ai.usage.input_tokens", None)
    output_tokens: int | None = _attr("gen_ai.usage.output_tokens", None)
    request_id: str | None = _attr("provider.request_id", None)
    text: str | None = _attr("text", None)
    tool_calls: list[str] = _attr("tool_calls", [])


# ---- tools -----------------------------------------------------------------------------


class ToolProgress(_ToolSpanEvent):
    """A running tool reported progress (`ToolContext.report_progress`)."""

    type: Literal["tool.progress"] = "tool.progress"
    message: str = _attr("message", "")
    fraction: float | None = _attr("fraction", None)


class ToolCallFinished(_ToolSpanEvent):
    """A tool call's result, as the model will read it (cut to 2000 characters here; the
    journal keeps it whole). `is_error`: the tool failed, timed out or was unavailable."""

    type: Literal["tool.result"] = "tool.result"
    result: str | None = _attr("result", None)
    is_error: bool = _attr("is_error", False)


class ArgumentsRepaired(BaseEvent):
    """A tool call's arguments were malformed and repaired; the call executes."""

    type: Literal["tool.arguments.repaired"] = "tool.arguments.repaired"
    tool_name: str = _attr("tool_name")
    requested_name: str | None = _attr("requested_name", None)
    call_id: str | None = _attr("call_id", None)
    repairs: list[str] = _attr("repairs", [])
    raw: str | None = _attr("raw", None)


class ArgumentsInvalid(BaseEvent):
    """A tool call was refused (invalid or truncated arguments, an unknown tool); it never
    executes. `decision`: the model is asked again ("reask"), or re-asks ran out."""

    type: Literal["tool.arguments.invalid"] = "tool.arguments.invalid"
    tool_name: str = _attr("tool_name")
    requested_name: str | None = _attr("requested_name", None)
    call_id: str | None = _attr("call_id", None)
    reason: str = _attr("status", "invalid")  # invalid, truncated, unknown_tool
    problems: list[str] = _attr("problems", [])
    error: str | None = _attr("error", None)
    raw: str | None = _attr("raw", None)
    decision: str | None = _attr("decision", None)  # reask, exhausted


class OutputValidated(BaseEvent):
    """The final answer matched the agent's output type (maybe after repairs)."""

    type: Literal["output.validated"] = "output.validated"
    repairs: list[str] = _attr("repairs", [])
    raw: str | None = _attr("raw", None)


class OutputInvalid(BaseEvent):
    """The final answer did not match the agent's output type."""

    type: Literal["output.invalid"] = "output.invalid"
    reason: str = _attr("status", "invalid")
    problems: list[str] = _attr("problems", [])
    error: str | None = _attr("error", None)
    raw: str | None = _attr("raw", None)
    decision: str | None = _attr("decision", None)


# ---- resilience ------------------------------------------------------------------------


class RetryAttempted(BaseEvent):
    """An attempt of a call failed (or was cancelled); a first attempt that succeeds is
    not reported."""

    type: Literal["retry.attempt"] = "retry.attempt"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    outcome: str = _attr("outcome")  # success, error, cancelled, retryable_result
    duration: float | None = _attr("duration", None)
    error_type: str | None = _attr("error_type", None)
    error: str | None = _attr("error", None)
    retryable: bool | None = _attr("retryable", None)


class RetryScheduled(BaseEvent):
    """The next attempt waits `delay` seconds (`reason`: backoff, retry_after, resume)."""

    type: Literal["retry.wait"] = "retry.wait"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    next_attempt: int = _attr("next_attempt")
    delay: float = _attr("delay")
    reason: str = _attr("reason")
    backoff: float | None = _attr("backoff", None)
    retry_after: float | None = _attr("retry_after", None)
    next_attempt_at: float | None = _attr("next_attempt_at", None)


class RetryGaveUp(BaseEvent):
    """No more attempts (`reason`: not_retryable, max_attempts, max_elapsed, deadline,
    budget, breaker_open, retry_after_too_long)."""

    type: Literal["retry.giveup"] = "retry.giveup"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    reason: str = _attr("reason")
    elapsed: float | None = _attr("elapsed", None)
    error_type: str | None = _attr("error_type", None)
    error: str | None = _attr("error", None)


class RetryBudgetRefused(BaseEvent):
    """The dependency's retry budget refused a retry (a brownout, not a storm)."""

    type: Literal["budget.refused"] = "budget.refused"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    balance: float | None = _attr("balance", None)


class BreakerChanged(BaseEvent):
    """A circuit breaker this run's call went through changed state."""

    type: Literal["breaker.transition"] = "breaker.transition"
    breaker: str = _attr("breaker")
    from_state: BreakerState = _attr("from")
    to_state: BreakerState = _attr("to")
    failure_rate: float | None = _attr("failure_rate", None)
    slow_call_rate: float | None = _attr("slow_call_rate", None)
    calls: int | None = _attr("calls", None)
    probe_at: float | None = _attr("probe_at", None)
    source: str | None = _attr("source", None)  # local (decided here) or store (another worker)


class BreakerRejected(BaseEvent):
    """An open breaker refused a call at once."""

    type: Literal["breaker.rejected"] = "breaker.rejected"
    breaker: str = _attr("breaker")
    state: BreakerState = _attr("state")
    probe_at: float | None = _attr("probe_at", None)
    retry_in: float | None = _attr("retry_in", None)


class FallbackUsed(BaseEvent):
    """The primary failed; `option` (another model, a cached answer) answers instead."""

    type: Literal["fallback.used"] = "fallback.used"
    chain: str = _attr("chain")
    option: str = _attr("option")
    index: int = _attr("index")
    error_type: str | None = _attr("error_type", None)
    error: str | None = _attr("error", None)


class FallbackFailed(BaseEvent):
    """A fallback option failed too."""

    type: Literal["fallback.failed"] = "fallback.failed"
    chain: str = _attr("chain")
    option: str = _attr("option")
    index: int = _attr("index")
    error_type: str | None = _attr("error_type", None)
    error: str | None = _attr("error", None)


class HedgeFired(BaseEvent):
    """A hedged request was sent beside a slow attempt."""

    type: Literal["hedge.fired"] = "hedge.fired"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    hedge: int = _attr("hedge")
    delay: float | None = _attr("delay", None)


class HedgeWon(BaseEvent):
    """One of the hedged requests answered first; the others were cancelled."""

    type: Literal["hedge.won"] = "hedge.won"
    pipeline: str = _attr("pipeline")
    attempt: int = _attr("attempt")
    winner: int = _attr("winner")
    cancelled: int = _attr("cancelled", 0)


class OtherEvent(BaseEvent):
    """An event of a type without a class of its own (or whose payload does not fit its
    class): read `type`, `name` and `attributes`."""

    status: str | None = Field(default=None, description="The span status: ok or error.")


Event: TypeAlias = (
    RunQueued
    | RunStarted
    | RunResumed
    | RunFinished
    | StateChanged
    | ToolCallStarted
    | StepStarted
    | StepFinished
    | TextDelta
    | TextReset
    | ModelResponded
    | ToolProgress
    | ToolCallFinished
    | ArgumentsRepaired
    | ArgumentsInvalid
    | OutputValidated
    | OutputInvalid
    | RetryAttempted
    | RetryScheduled
    | RetryGaveUp
    | RetryBudgetRefused
    | BreakerChanged
    | BreakerRejected
    | FallbackUsed
    | FallbackFailed
    | HedgeFired
    | HedgeWon
    | OtherEvent
)

EVENT_CLASSES: tuple[type[BaseEvent], ...] = (
    RunQueued,
    RunStarted,
    RunResumed,
    RunFinished,
    StateChanged,
    ToolCallStarted,  # before StepStarted: a reader trying them in order gets the narrower
    StepStarted,
    StepFinished,
    TextDelta,
    TextReset,
    ModelResponded,
    ToolProgress,
    ToolCallFinished,
    ArgumentsRepaired,
    ArgumentsInvalid,
    OutputValidated,
    OutputInvalid,
    RetryAttempted,
    RetryScheduled,
    RetryGaveUp,
    RetryBudgetRefused,
    BreakerChanged,
    BreakerRejected,
    FallbackUsed,
    FallbackFailed,
    HedgeFired,
    HedgeWon,
    OtherEvent,
)

# One class per type; step.started is a ToolCallStarted when the step calls a tool.
_BY_TYPE: dict[str, type[BaseEvent]] = {
    c.model_fields["type"].default: c
    for c in EVENT_CLASSES
    if c not in (OtherEvent, ToolCallStarted)
}


def _class_of(type_: str, attributes: Any) -> type[BaseEvent]:
    if (
        type_ == "step.started"
        and isinstance(attributes, dict)
        and attributes.get("gen_ai.operation.name") == "execute_tool"
    ):
        return ToolCallStarted
    return _BY_TYPE.get(type_, OtherEvent)


def parse_event(data: dict[str, Any]) -> Event:
    """The typed event of a JSON object with the common fields (a stored row as a dict,
    or the `data` of an SSE frame). Never raises for an unknown type or an unexpected
    payload: that is an `OtherEvent`. Raises ValidationError only when a common field is
    missing or mistyped."""
    cls = _class_of(str(data.get("type", "")), data.get("attributes"))
    if cls is not OtherEvent:
        try:
            event: Event = cls.model_validate(data)  # type: ignore[assignment]
            return event
        except ValidationError as exc:
            log.debug(
                "event %s of run %s kept as OtherEvent: %s",
                data.get("type"),
                data.get("run_id"),
                exc.errors(include_url=False)[:1],
            )
    return OtherEvent.model_validate(data)


def public_event(record: EventRecord) -> Event:
    """The typed event of a stored (or live) event row."""
    return parse_event(
        {
            "run_id": record.run_id,
            "seq": record.seq,
            "type": record.type,
            "name": record.name,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "parent_span_id": record.parent_span_id,
            "start": record.start,
            "end": record.end,
            "latency_ms": record.latency_ms,
            "status": record.status,
            "attributes": record.attributes,
        }
    )


__all__ = [
    "EVENT_CLASSES",
    "ArgumentsInvalid",
    "ArgumentsRepaired",
    "BaseEvent",
    "BreakerChanged",
    "BreakerRejected",
    "BreakerState",
    "Event",
    "FallbackFailed",
    "FallbackUsed",
    "HedgeFired",
    "HedgeWon",
    "ModelResponded",
    "OtherEvent",
    "OutputInvalid",
    "OutputValidated",
    "RetryAttempted",
    "RetryBudgetRefused",
    "RetryGaveUp",
    "RetryScheduled",
    "RunError",
    "RunFinished",
    "RunQueued",
    "RunResumed",
    "RunStarted",
    "StateChanged",
    "StepFinished",
    "StepKind",
    "StepStarted",
    "TextDelta",
    "TextReset",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolProgress",
    "parse_event",
    "public_event",
]
