"""The typed events of the public stream, produced by real turns on both stores.

Every event type the engine writes in these turns (tools, progress, repaired and invalid
arguments, retries, a give-up, a fallback, a voided text, a breaker that opens and
rejects, hedges, structured output, failures and cancels) comes out of
`Orchestrion.subscribe` / `stream` / `follow` as its own class, with fields that are the
stored payload's, never as an `OtherEvent`; and each survives the JSON round trip of the
service (`model_dump(mode="json")` then `parse_event`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from orchestrion import (
    Agent,
    ArgumentsInvalid,
    ArgumentsRepaired,
    BaseEvent,
    BreakerChanged,
    BreakerRejected,
    BreakerSettings,
    ConversationState,
    Event,
    FallbackUsed,
    HedgeFired,
    HedgePolicy,
    HedgeWon,
    ModelResponded,
    Orchestrion,
    OtherEvent,
    OutputInvalid,
    OutputValidated,
    ProviderUnavailable,
    RateLimited,
    RetryAttempted,
    RetryGaveUp,
    RetryPolicy,
    RetryScheduled,
    RunFinished,
    RunQueued,
    RunStarted,
    RunStatus,
    StateChanged,
    StepFinished,
    StepStarted,
    TextDelta,
    TextReset,
    ToolCallFinished,
    ToolCallStarted,
    ToolContext,
    ToolProgress,
    TurnResult,
    parse_event,
    tool,
)
from orchestrion.models.messages import FinishDelta, ModelDelta, ModelRequest, Usage
from orchestrion.models.messages import TextDelta as ModelText
from orchestrion.observe.public import EVENT_CLASSES, public_event
from orchestrion.store.base import EventRecord
from orchestrion.testing import ScriptedModel, call, calls, raw_call, say

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, jitter=False)


class Failing:
    """Fails with the given errors first (after streaming `partial` text, if any), then
    answers from its script."""

    def __init__(
        self, errors: list[Exception], inner: ScriptedModel, *, name: str, partial: str = ""
    ) -> None:
        self.errors, self.inner, self.name, self.partial = list(errors), inner, name, partial

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        if self.errors:
            if self.partial:
                yield ModelText(text=self.partial)
            raise self.errors.pop(0)
        async for delta in self.inner.stream(request):
            yield delta


class SlowFirst:
    """The first request hangs; any later one (a hedge) answers at once."""

    name = "slow-first"

    def __init__(self) -> None:
        self.requests = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.requests += 1
        if self.requests == 1:
            await asyncio.sleep(60)
        yield ModelText(text="hedged answer")
        yield FinishDelta(reason="stop", usage=Usage(input_tokens=1, output_tokens=2))


class City(BaseModel):
    city: str


def agents() -> list[Agent]:
    @tool(effect="write")
    async def book(customer_id: int, slot: str, ctx: ToolContext) -> str:
        """Book a slot."""
        await ctx.record_effect("booking", {"customer_id": customer_id, "slot": slot})
        return f"booked {customer_id} at {slot}"

    attempts: list[int] = []

    @tool(retry=FAST)
    async def survey(topic: str, ctx: ToolContext) -> str:
        """Survey a topic, slowly."""
        await ctx.progress("halfway", 0.5)
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("survey service reset the connection")
        return f"{topic}: fine"

    rich = Agent(
        "rich",
        model=Failing(
            [RateLimited("slow down", status_code=429, retry_after=0.01)],
            ScriptedModel(
                [
                    calls(
                        raw_call("book", "{'customer_id': '7', 'slot': 'noon',}"),
                        call("survey", topic="weather"),
                    ),
                    raw_call("book", '{"customer_id": "abc", "slot": "noon"}'),
                    say("All done."),
                ]
            ),
            name="rich-model",
        ),
        tools=[book, survey],
        retry=FAST,
    )
    fallback = Agent(
        "fallback",
        model=Failing(
            [ProviderUnavailable("down", status_code=503)] * 10,
            ScriptedModel([say("unreachable")]),
            name="primary",
        ),
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
        fallback_models=[ScriptedModel([say("from the backup")], name="backup")],
    )
    reset = Agent(
        "reset",
        model=Failing(
            [ProviderUnavailable("cut", status_code=503)],
            ScriptedModel([say("the real answer")]),
            name="cut-model",
            partial="a voided beginning",
        ),
        retry=FAST,
    )
    hedged = Agent("hedged", model=SlowFirst(), hedge=HedgePolicy(delay=0.05), retry=None)
    typed = Agent(
        "typed",
        model=ScriptedModel([say("Paris, I think"), say('{"city": "Paris"}')]),
        output_type=City,
    )
    return [rich, fallback, reset, hedged, typed]


def dead_agent() -> Agent:
    return Agent(
        "dead",
        model=Failing(
            [ProviderUnavailable("down", status_code=503)] * 100,
            ScriptedModel([say("unreachable")]),
            name="dead-model",
        ),
        retry=RetryPolicy(max_attempts=1),
    )


async def stored(orx: Orchestrion, run_id: str) -> list[Event]:
    return [e async for e in orx.subscribe(run_id)]


def of(events: list[Event], cls: type[BaseEvent]) -> list[Any]:
    return [e for e in events if type(e) is cls]


async def test_every_event_of_real_turns_has_its_class_and_the_payloads_fields(
    store_url: str,
) -> None:
    # A breaker that opens after two failures, for the dead model's turns only.
    settings = BreakerSettings(minimum_calls=2, window_size=2, wait_in_open=600)
    async with Orchestrion(store_url, agents=[dead_agent()], breaker_settings=settings) as orx:
        dead = [await orx.send("dead", f"try {i}", conversation="c-dead") for i in range(3)]
        dead_events = [e for r in dead for e in await stored(orx, r.run_id)]
        degradation = orx.agents["dead"].degradation_message
    async with Orchestrion(store_url, agents=agents()) as orx:
        results: dict[str, TurnResult] = {}
        for name in ("rich", "fallback", "reset", "hedged", "typed"):
            results[name] = await orx.send(name, "go", conversation=f"c-{name}")
        runs = {name: await stored(orx, r.run_id) for name, r in results.items()}
        runs["dead"] = dead_events

        everything = [e for events in runs.values() for e in events]
        # Nothing the engine wrote here is left untyped.
        assert of(everything, OtherEvent) == [], {e.type for e in of(everything, OtherEvent)}
        seen = {type(e) for e in everything}
        missing = {c.__name__ for c in EVENT_CLASSES} - {c.__name__ for c in seen}
        # Never produced by these turns: resumes (crash tests), a failed fallback, a
        # refused retry budget and the generic class.
        assert missing == {"RunResumed", "FallbackFailed", "RetryBudgetRefused", "OtherEvent"}

        # Each class's fields are the payload's.
        for e in everything:
            assert parse_event(e.model_dump(mode="json")) == e  # the service's round trip
        rich = runs["rich"]
        queued, started = rich[0], rich[1]
        assert isinstance(queued, RunQueued) and queued.seq == 1
        assert (queued.conversation_id, queued.agent) == ("c-rich", "rich")
        assert isinstance(started, RunStarted) and started.epoch == 1 and started.agent == "rich"
        assert [(s.from_state, s.to_state) for s in of(rich, StateChanged)][:2] == [
            (ConversationState.AWAITING_INPUT, ConversationState.STREAMING_RESPONSE),
            (ConversationState.STREAMING_RESPONSE, ConversationState.PROCESSING_TOOLS),
        ]
        model_steps = [s for s in of(rich, StepStarted) if s.kind == "model"]
        assert [s.model for s in model_steps] == ["rich-model"] * 3
        assert [s.step for s in model_steps] == [1, 4, 5]  # tools were steps 2 and 3
        tools = of(rich, ToolCallStarted)
        assert all(isinstance(t, StepStarted) and t.kind == "tool" for t in tools)
        # The arguments as the model wrote them (repaired and validated before the call).
        assert sorted((t.tool_name, t.arguments) for t in tools) == [
            ("book", "{'customer_id': '7', 'slot': 'noon',}"),
            ("survey", '{"topic": "weather"}'),
        ]
        for t in tools:
            assert t.call_id == t.attributes["gen_ai.tool.call.id"]
            assert t.idempotency_key == f"{results['rich'].run_id}:{t.step}"
        finished_tools = of(rich, ToolCallFinished)
        assert sorted((f.tool_name, f.result, f.is_error) for f in finished_tools) == [
            ("book", "booked 7 at noon", False),
            ("survey", "weather: fine", False),
        ]
        progress = of(rich, ToolProgress)
        assert [(p.tool_name, p.message, p.fraction) for p in progress][-1] == (
            "survey",
            "halfway",
            0.5,
        )
        (repaired,) = of(rich, ArgumentsRepaired)
        assert repaired.tool_name == "book" and repaired.repairs and "'7'" in (repaired.raw or "")
        (invalid,) = of(rich, ArgumentsInvalid)
        assert (invalid.tool_name, invalid.reason, invalid.decision) == ("book", "invalid", "reask")
        assert invalid.problems and invalid.call_id
        waits = of(rich, RetryScheduled)
        assert ("model:rich-model", "retry_after") in {(w.pipeline, w.reason) for w in waits}
        assert "tool:survey" in {w.pipeline for w in waits}
        failed_attempts = of(rich, RetryAttempted)
        assert {(a.pipeline, a.outcome, a.error_type) for a in failed_attempts} >= {
            ("model:rich-model", "error", "RateLimited"),
            ("tool:survey", "error", "ConnectionError"),
        }
        step_ends = of(rich, StepFinished)
        assert {(s.kind, s.status) for s in step_ends} == {("model", "ok"), ("tool", "ok")}
        responses = of(rich, ModelResponded)
        assert responses[0].tool_calls == ["book", "survey"]
        assert responses[-1].text == "All done." and responses[-1].finish_reasons == ["stop"]
        end = rich[-1]
        assert isinstance(end, RunFinished) and end.status == "succeeded"
        assert end.answer == "All done." and end.error is None
        assert end.input_tokens == sum(r.input_tokens or 0 for r in responses)
        assert "".join(t.text for t in of(rich, TextDelta)) == "All done."

        fallback = runs["fallback"]
        (gave_up,) = of(fallback, RetryGaveUp)
        assert (gave_up.pipeline, gave_up.reason, gave_up.error_type) == (
            "model:primary",
            "max_attempts",
            "ProviderUnavailable",
        )
        (used,) = of(fallback, FallbackUsed)
        assert (used.option, used.index) == ("model:backup", 0)
        assert used.error_type == "ProviderUnavailable"
        assert results["fallback"].answer == "from the backup"

        reset = runs["reset"]
        (voided,) = of(reset, TextReset)
        texts = of(reset, TextDelta)
        assert texts[0].text == "a voided beginning" and texts[0].seq < voided.seq
        assert all(t.parent_span_id == voided.parent_span_id for t in texts)
        assert "".join(t.text for t in texts if t.seq > voided.seq) == "the real answer"

        hedge = runs["hedged"]
        (fired,) = of(hedge, HedgeFired)
        (won,) = of(hedge, HedgeWon)
        assert (fired.hedge, won.winner, won.cancelled) == (1, 1, 1)
        assert results["hedged"].answer == "hedged answer"

        typed = runs["typed"]
        (bad,) = of(typed, OutputInvalid)
        (good,) = of(typed, OutputValidated)
        assert bad.decision == "reask" and bad.raw == "Paris, I think" and bad.seq < good.seq

        opened = of(runs["dead"], BreakerChanged)
        assert [(b.breaker, b.from_state, b.to_state) for b in opened] == [
            ("model:dead-model", "closed", "open")
        ]
        (rejected,) = of(runs["dead"], BreakerRejected)
        assert (rejected.breaker, rejected.state) == ("model:dead-model", "open")
        ends = of(runs["dead"], RunFinished)
        assert [e.status for e in ends] == ["failed"] * 3
        assert [e.error.type for e in ends if e.error] == [
            "ProviderUnavailable",
            "ProviderUnavailable",
            "BreakerOpen",
        ]
        assert all(e.error and e.error.message for e in ends)
        assert ends[-1].answer == degradation
        # TurnResult's status is the RunStatus literal.
        assert {r.status for r in dead} == {"failed"} and "failed" in get_args(RunStatus)


async def test_the_live_stream_yields_tokens_and_the_store_the_same_text(store_url: str) -> None:
    model = ScriptedModel([say("one two three four five")], chunk_size=4, chunk_delay=0.005)
    agent = Agent("talk", model=model)
    async with Orchestrion(store_url, agents=[agent]) as orx:
        live = [e async for e in orx.stream("talk", "hi", conversation="c1")]
        tokens = [e for e in live if isinstance(e, TextDelta)]
        assert len(tokens) > 1 and all(t.seq == 0 for t in tokens)
        assert "".join(t.text for t in tokens) == "one two three four five"
        end = live[-1]
        assert isinstance(end, RunFinished) and end.status == "succeeded"
        # Durable text comes in stored chunks (seq > 0), through subscribe and follow alike.
        for events in (
            await stored(orx, end.run_id),
            [e async for e in orx.follow(end.run_id)],
        ):
            chunks = [e for e in events if isinstance(e, TextDelta)]
            assert chunks and all(c.seq > 0 for c in chunks)
            assert "".join(c.text for c in chunks) == "one two three four five"
            assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_cancelled_turn_ends_with_its_status_and_error(store_url: str) -> None:
    gate = asyncio.Event()

    @tool(timeout=None, retry=None)
    async def wait_here() -> str:
        """Wait."""
        await gate.wait()
        return "never"

    agent = Agent("w", model=ScriptedModel([call("wait_here")]), tools=[wait_here])
    async with Orchestrion(store_url, agents=[agent]) as orx:
        run = await orx.submit("w", "go")
        events = orx.events(run.id)
        async for event in events:
            if isinstance(event, ToolCallStarted):
                await orx.cancel(run.id)
            if isinstance(event, RunFinished):
                assert event.status == "cancelled" and event.answer == ""
                assert event.error is not None and event.error.type == "RunCancelled"
                break
        else:
            pytest.fail("the stream ended without run.finished")
        await events.aclose()
        assert (await orx.result(run.id)).status == "cancelled"


def record(type_: str, attributes: dict[str, Any], **kw: Any) -> EventRecord:
    fields: dict[str, Any] = {
        "run_id": "run_1",
        "seq": 7,
        "name": type_,
        "trace_id": "t" * 32,
        "span_id": "s" * 16,
        "parent_span_id": None,
        "start": 1.0,
        "end": 2.0,
        "latency_ms": 1000.0,
        "status": None,
    }
    fields.update(kw)
    return EventRecord(type=type_, attributes=attributes, **fields)


def test_unknown_types_and_payloads_that_do_not_fit_are_other_events() -> None:
    unknown = public_event(record("compensation.started", {"step": 3}, status="error"))
    assert isinstance(unknown, OtherEvent)
    assert (unknown.type, unknown.status, unknown.attributes) == (
        "compensation.started",
        "error",
        {"step": 3},
    )
    # A known type whose payload lacks a field, or has a status this version does not
    # know, is kept whole rather than raised.
    for broken in (
        record("text.delta", {}),
        record("run.finished", {"run.status": "needs_attention", "answer": ""}),
        record("state.changed", {"from": "AWAITING_INPUT", "to": "SLEEPING"}),
    ):
        event = public_event(broken)
        assert isinstance(event, OtherEvent) and event.type == broken.type
        assert event.attributes == broken.attributes
    # The common fields are always the row's.
    event = public_event(record("text.delta", {"text": "hi"}))
    assert isinstance(event, TextDelta) and event.text == "hi"
    assert (event.run_id, event.seq, event.start, event.end, event.latency_ms) == (
        "run_1",
        7,
        1.0,
        2.0,
        1000.0,
    )


def test_events_are_frozen_and_constructible_by_field_name() -> None:
    event = TextDelta(
        run_id="r", seq=0, name="text", trace_id="t", span_id="s", parent_span_id=None,
        start=0.0, text="hello",
    )  # fmt: skip
    assert event.type == "text.delta" and event.attributes == {}
    with pytest.raises(ValueError, match="frozen"):
        event.text = "changed"  # type: ignore[misc]
    finished = parse_event(
        {
            "run_id": "r", "seq": 9, "type": "run.finished", "name": "invoke_agent a",
            "trace_id": "t", "span_id": "s", "parent_span_id": None, "start": 0.0,
            "attributes": {"run.status": "failed", "error.type": "BadRequest",
                           "error.message": "400", "answer": "Sorry"},
        }
    )  # fmt: skip
    assert isinstance(finished, RunFinished) and finished.status == "failed"
    assert finished.error is not None and (finished.error.type, finished.error.message) == (
        "BadRequest",
        "400",
    )
