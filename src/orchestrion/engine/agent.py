"""The agent and its loop: model, then that response's tool calls concurrently, then the
model again, until a final answer. Every model call and tool call is a journaled step."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from orchestrion.context.builder import Ask, ContextBuilder
from orchestrion.context.load import LoadedContext
from orchestrion.context.policy import ContextFunction, ContextPolicy, as_policy
from orchestrion.engine.calls import model_call, tool_step
from orchestrion.engine.conversation import ConversationState
from orchestrion.engine.journal import Journal
from orchestrion.errors import InvalidOutput, TooManySteps
from orchestrion.models.base import Model
from orchestrion.models.messages import (
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from orchestrion.observe.events import RunEmitter
from orchestrion.resilience.classify import DEFAULT_CLASSIFIER, Classifier
from orchestrion.resilience.hedge import HedgePolicy
from orchestrion.resilience.retry import RetryPolicy
from orchestrion.resilience.shared import BreakerRegistry
from orchestrion.store.base import BusyPolicy
from orchestrion.tools.arguments import (
    ArgumentPolicy,
    ArgumentResult,
    ReaskBudget,
    exhausted_outcome,
    prepare_arguments,
    prepare_output,
)
from orchestrion.tools.registry import Tool, ToolRegistry

DEFAULT_DEGRADATION = (
    "Sorry, I could not finish that request just now. Nothing was lost; please try again "
    "in a moment."
)


@dataclass
class Agent:
    """What an agent is: a model, tools, instructions and the limits of one turn."""

    name: str
    model: Model  # a spec string such as "openai:gpt-4o-mini" is resolved at construction
    tools: Iterable[Tool | Callable[..., Any]] = ()
    instructions: str | None = None
    max_steps: int = 12  # model calls per turn before the loop gives up
    turn_timeout: float = 300.0  # the whole turn's deadline, seconds
    conversation_ttl: float = 7 * 24 * 3600.0
    busy_policy: BusyPolicy = "enqueue"
    # Fleet-wide limits of this agent's queue, enforced by the store at claim time.
    max_concurrent_runs: int | None = None
    max_starts_per_second: float | None = None
    degradation_message: str = DEFAULT_DEGRADATION
    # Model calls: retries (None: none), per-attempt timeout, hedging, fallback models.
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    model_timeout: float | None = 120.0
    hedge: HedgePolicy | None = None
    fallback_models: Sequence[Model] = ()
    # Keep the last good answer per request; serve it when the model and its fallbacks fail.
    cache_answers: bool = False
    # Which failures are retried (by exception type, predicate, or result).
    classifier: Classifier = DEFAULT_CLASSIFIER
    # How malformed tool arguments are re-asked, and what happens when re-asks run out.
    argument_policy: ArgumentPolicy = field(default_factory=ArgumentPolicy)
    # A pydantic model the final answer must match (validated through the same pipeline).
    output_type: type[BaseModel] | None = None
    # What of the conversation each model request carries (docs/context.md): a policy
    # (keep_all(), window(...), summarize(...)) or a function of the messages. None: the
    # default, window(max_tokens=16_000).
    context: ContextPolicy | ContextFunction | None = None
    registry: ToolRegistry = field(init=False)

    def __post_init__(self) -> None:
        given: object = self.model
        if isinstance(given, str):
            from orchestrion.models.resolve import resolve_model

            self.model = resolve_model(given)  # like --model; ModelConfigError if unusable
        elif not isinstance(given, Model):
            raise TypeError(
                f"Agent {self.name!r}: model must be a Model or a spec string such as "
                f"'openai:gpt-4o-mini', not {type(given).__name__}"
            )
        self.registry = ToolRegistry(self.tools)
        self.context = as_policy(self.context)

    @property
    def context_policy(self) -> ContextPolicy:
        """`context` as the policy it became at construction."""
        return as_policy(self.context)


@dataclass
class TurnOutcome:
    answer: str
    new_messages: list[Message]
    usage: Usage
    model_calls: int
    output: dict[str, Any] | None = None  # the validated structured answer (output_type)
    context: dict[str, Any] | None = None  # what the next turn's context starts from


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
    context: LoadedContext  # the stored history a turn's requests are built from
    user_message: Message
    set_state: Callable[[ConversationState], Any]  # async
    record_effect: Callable[[str, str, dict[str, Any]], Any]  # async
    breakers: BreakerRegistry  # shared breakers and budgets, per dependency


async def run_turn(ctx: TurnContext) -> TurnOutcome:
    agent, emitter = ctx.agent, ctx.emitter
    preamble = _preamble(agent)
    turn: list[Message] = [ctx.user_message]
    usage = Usage()
    specs = agent.registry.specs()
    # Re-asks are counted per turn. The count is rebuilt the same way when a turn is
    # replayed, because it depends only on the (journaled) model responses.
    budget = ReaskBudget(agent.argument_policy)

    # The requests' messages come from the agent's context policy (window, summary...).
    context = ContextBuilder(ctx, ctx.context, preamble, specs)

    for round_number in range(agent.max_steps):
        await ctx.set_state(ConversationState.STREAMING_RESPONSE)
        response = await context.model_round(turn, round_number, _chat(ctx, specs, round_number))
        usage = usage + response.usage
        turn.append(response.message)
        truncated = response.finish_reason == "length"
        calls = response.message.tool_calls
        if not calls:
            final = _final_answer(ctx, response, budget, truncated)
            if isinstance(final, Message):  # the answer did not fit the output type: re-ask
                turn.append(final)
                continue
            final.new_messages, final.usage, final.model_calls = turn, usage, round_number + 1
            final.context = context.state()
            return final
        await ctx.set_state(ConversationState.PROCESSING_TOOLS)
        # Arguments are checked and decided in call order (deterministic), then the
        # executable calls run concurrently, each as its own journaled step.
        pending, give_up = [], None
        for call in calls:
            checked = prepare_arguments(call, agent.registry, truncated=truncated)
            decision = budget.decide(checked)
            _report_arguments(emitter, call, checked, decision)
            if decision == "execute":
                pending.append(tool_step(ctx, call, checked))
            elif decision == "reask":
                pending.append(
                    _answered(Message.tool_result(call, checked.error or "", is_error=True))
                )
            else:
                outcome = exhausted_outcome(checked, agent.argument_policy)
                pending.append(
                    _answered(Message.tool_result(call, outcome.tool_result, is_error=True))
                )
                give_up = give_up or outcome.user_message
        turn.extend(await _together(pending))
        if give_up is not None:  # policy "message": end the turn with the configured words
            turn.append(Message.assistant(give_up))
            return TurnOutcome(give_up, turn, usage, round_number + 1, context=context.state())
    raise TooManySteps(
        f"agent {agent.name!r} made {agent.max_steps} model calls without a final answer"
    )


def _chat(ctx: TurnContext, specs: tuple[ToolSpec, ...], round_number: int) -> Ask:
    """The journaled model step of a round, with the messages the context policy chose."""
    agent = ctx.agent

    def ask(messages: tuple[Message, ...], attributes: dict[str, Any]) -> Awaitable[ModelResponse]:
        request = ModelRequest(messages=messages, tools=specs, deadline=ctx.deadline)
        return ctx.journal.step(
            f"chat {agent.model.name}",
            model_call(ctx, request),
            decode=ModelResponse.model_validate,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": agent.model.name,
                "round": round_number,
                **attributes,
            },
            announce=True,
            effect="read",  # a model call has no side effect: it may be recorded lazily
        )

    return ask


def _preamble(agent: Agent) -> list[Message]:
    parts = [agent.instructions] if agent.instructions else []
    if agent.output_type is not None:
        schema = json.dumps(agent.output_type.model_json_schema(), separators=(",", ":"))
        parts.append(f"Give your final answer as one JSON object matching this schema: {schema}")
    return [Message.system("\n\n".join(parts))] if parts else []


def _final_answer(
    ctx: TurnContext, response: ModelResponse, budget: ReaskBudget, truncated: bool
) -> TurnOutcome | Message:
    """The turn's answer; with an output type, validated through the argument pipeline.
    Returns a correction message when the model should be asked again."""
    text = response.message.content or ""
    agent = ctx.agent
    if agent.output_type is None:
        return TurnOutcome(text, [], Usage(), 0)
    checked = prepare_output(text, agent.output_type, truncated=truncated)
    decision = budget.decide(checked)
    ctx.emitter.emit(
        "output.validated" if checked.executable else "output.invalid",
        f"output {agent.output_type.__name__}",
        status="ok" if checked.executable else "error",
        attributes={**checked.event_payload(), "decision": decision},
    )
    if checked.arguments is not None and checked.executable:
        return TurnOutcome(text, [], Usage(), 0, output=checked.arguments.model_dump(mode="json"))
    if decision == "reask":
        return Message.correction(checked.error or "")
    raise InvalidOutput(
        f"the final answer never matched {agent.output_type.__name__}: {checked.error}"
    )


async def _answered(message: Message) -> Message:
    return message


async def _together(calls: list[Awaitable[Message]]) -> list[Message]:
    """Run one response's tool calls concurrently, as a structured group: when one raises
    what ends the turn (lease lost, deadline, cancellation, store failure), the others are
    cancelled and the turn goes on only once all of them have stopped, so no tool of this
    turn acts after the turn has ended. (A tool's own failure is a result, not a raise.)"""
    if len(calls) == 1:
        return [await calls[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coroutine(c)) for c in calls]
    except BaseExceptionGroup as failed:
        raise _first_cause(failed) from None
    return [t.result() for t in tasks]


async def _as_coroutine(awaitable: Awaitable[Message]) -> Message:
    return await awaitable


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ends the turn: the first one raised, unwrapped from its group."""
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first


def _report_arguments(
    emitter: RunEmitter, call: ToolCall, checked: ArgumentResult, decision: str
) -> None:
    """Repairs, refusals and re-asks are events, with the raw model output kept."""
    if checked.status == "ok":
        return
    if checked.executable:
        emitter.emit(
            "tool.arguments.repaired",
            f"arguments {call.name}",
            attributes={**checked.event_payload(), "call_id": call.id},
        )
        return
    emitter.emit(
        "tool.arguments.invalid",
        f"arguments {call.name}",
        status="error",
        attributes={**checked.event_payload(), "call_id": call.id, "decision": decision},
    )
