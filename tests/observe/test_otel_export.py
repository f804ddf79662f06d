"""A real turn exported through the real OTLP/HTTP exporters to a receiver on loopback,
on both stores: GenAI span names, parentage, ids shared with `orchestrion trace`,
attributes, metrics, and content only when opted in."""

from __future__ import annotations

import json

import pytest

from orchestrion import Orchestrion
from orchestrion.observe.events import run_span_id
from orchestrion.store.base import EventRecord
from tests.observe.agents import ANSWER, TOOL_RESULT, USER_SECRET, weather_agent
from tests.observe.otlp import ReceivedSpan, Receiver
from tests.observe.support import Providers, durable_result, points

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_OK, STATUS_ERROR = 1, 2
TURNS = 5  # turns of one conversation exported in one test


Runs = list[tuple[str, list[EventRecord]]]


async def _turns(store: str, providers: Providers, count: int) -> Runs:
    """Run `count` turns of one conversation; return each run's id and stored events."""
    runs = []
    async with Orchestrion(
        store,
        agents=[weather_agent()],
        tracer_provider=providers.tracer,
        meter_provider=providers.meter,
    ) as orx:
        for i in range(count):
            sent = await orx.send("weather", f"{USER_SECRET}; weather {i}?", conversation="c-1")
            result = await durable_result(orx, sent.run_id)
            assert result.status == "succeeded", result
            runs.append((result.run_id, await orx.store.read_events(result.run_id)))
    providers.shutdown()  # flush: every span and metric reaches the receiver now
    return runs


def _strings(span: ReceivedSpan) -> str:
    """Everything a span says, as text (to look for content that must not be there)."""
    return json.dumps(
        [span.name, span.attributes, [(e.name, e.attributes) for e in span.events]], default=str
    )


async def test_a_turn_is_one_trace_of_genai_spans_with_orchestrions_ids(
    store: str, receiver: Receiver, providers: Providers
) -> None:
    runs = await _turns(store, providers, TURNS)
    assert len(receiver.spans) == 4 * TURNS  # per turn: invoke_agent, chat, execute_tool, chat
    for run_id, events in runs:
        trace_id = events[0].trace_id
        spans = receiver.trace(trace_id)
        names = sorted(s.name for s in spans)
        assert names == [
            "chat scripted-weather",
            "chat scripted-weather",
            "execute_tool lookup",
            "invoke_agent weather",
        ]
        root = next(s for s in spans if s.name == "invoke_agent weather")
        assert root.span_id == run_span_id(run_id) and root.parent_span_id is None
        assert root.kind == SPAN_KIND_INTERNAL and root.status_code == STATUS_OK
        assert root.resource["service.name"] == "otel-test" and root.scope == "orchestrion"

        # Each step span is the step's own span in the store: same id, same times.
        finished = {e.span_id: e for e in events if e.type == "step.finished"}
        steps = [s for s in spans if s is not root]
        assert {s.span_id for s in steps} == set(finished)
        for span in steps:
            assert span.parent_span_id == root.span_id
            event = finished[span.span_id]
            assert span.start == pytest.approx(event.start, abs=1e-6)
            assert event.end is not None and span.end == pytest.approx(event.end, abs=1e-6)
            assert span.attributes["gen_ai.conversation.id"] == "c-1"
            assert span.attributes["gen_ai.agent.name"] == "weather"
            assert span.attributes["orchestrion.run.id"] == run_id
            assert span.attributes["orchestrion.step.seq"] == event.attributes["step.seq"]

        chats = sorted(
            (s for s in steps if s.name.startswith("chat")),
            key=lambda s: s.attributes["orchestrion.step.seq"],
        )
        responses = [e for e in events if e.type == "model.response"]
        assert len(chats) == len(responses) == 2
        for chat, response, reason in zip(chats, responses, ("tool_calls", "stop"), strict=True):
            a = chat.attributes
            assert chat.kind == SPAN_KIND_CLIENT
            assert a["gen_ai.operation.name"] == "chat"
            assert a["gen_ai.provider.name"] == "orchestrion.scripted"
            assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "scripted-weather"
            assert a["gen_ai.response.finish_reasons"] == [reason]
            for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
                assert a[key] == response.attributes[key]
            assert 0 <= a["gen_ai.response.time_to_first_chunk"] <= chat.end - chat.start
        assert root.attributes["gen_ai.usage.input_tokens"] == sum(
            c.attributes["gen_ai.usage.input_tokens"] for c in chats
        )
        assert root.attributes["orchestrion.run.status"] == "succeeded"

        tool = next(s for s in steps if s.name == "execute_tool lookup")
        assert tool.kind == SPAN_KIND_INTERNAL and tool.status_code != STATUS_ERROR
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.name"] == "lookup"
        assert tool.attributes["gen_ai.tool.type"] == "function"
        call_id = tool.attributes["gen_ai.tool.call.id"]
        assert call_id.startswith("call_") and len(call_id) > 10  # unique, like a provider's
        assert tool.attributes["gen_ai.tool.description"] == "Look up the weather of a city."
        assert tool.attributes["orchestrion.tool.effect"] == "write"

        # State transitions are events of the run's span, at the times the store has.
        changes = [e for e in events if e.type == "state.changed"]
        exported = [e for e in root.events if e.name == "state.changed"]
        assert [(e.attributes["from"], e.attributes["to"]) for e in exported] == [
            (c.attributes["from"], c.attributes["to"]) for c in changes
        ]
        assert [e.time for e in exported] == pytest.approx([c.start for c in changes], abs=1e-6)

        # No content by default: not the user's words, the tool's result or the answer.
        for span in spans:
            text = _strings(span)
            for content in (USER_SECRET, TOOL_RESULT, ANSWER, "Paris", "Checking the sky"):
                assert content not in text, (span.name, content)
            assert not any(k.endswith("messages") for k in span.attributes), span.name

    # One trace per turn, each with its own trace id.
    assert len({s.trace_id for s in receiver.spans}) == TURNS
    _check_metrics(receiver, runs)


def _check_metrics(receiver: Receiver, runs: Runs) -> None:
    responses = [e for _, events in runs for e in events if e.type == "model.response"]
    for kind in ("input", "output"):
        (point,) = points(
            receiver,
            "gen_ai.client.token.usage",
            **{"gen_ai.token.type": kind, "gen_ai.operation.name": "chat"},
        )
        assert point.unit == "{token}"
        assert point.attributes["gen_ai.provider.name"] == "orchestrion.scripted"
        assert point.attributes["gen_ai.request.model"] == "scripted-weather"
        assert point.count == len(responses) == 2 * TURNS
        assert point.value == sum(e.attributes[f"gen_ai.usage.{kind}_tokens"] for e in responses)
    (chat,) = points(
        receiver, "gen_ai.client.operation.duration", **{"gen_ai.operation.name": "chat"}
    )
    (tool,) = points(
        receiver, "gen_ai.client.operation.duration", **{"gen_ai.operation.name": "execute_tool"}
    )
    assert (chat.count, tool.count, chat.unit) == (2 * TURNS, TURNS, "s")
    (ttfc,) = points(receiver, "gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.count == 2 * TURNS  # both answers of each turn start with text
    (succeeded,) = points(receiver, "orchestrion.runs", **{"orchestrion.run.status": "succeeded"})
    assert succeeded.value == TURNS
    (claims,) = points(receiver, "orchestrion.run.claim_latency")
    assert claims.count == TURNS
    assert not points(receiver, "orchestrion.step.retries")
    assert not points(receiver, "orchestrion.lease.takeovers")


async def test_content_is_exported_only_when_opted_in(
    store: str, receiver: Receiver, providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    ((_, events),) = await _turns(store, providers, 1)
    spans = {s.name: s for s in receiver.trace(events[0].trace_id)}
    root = spans["invoke_agent weather"]
    assert json.loads(root.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": f"{USER_SECRET}; weather 0?"}]}
    ]
    assert json.loads(root.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}
    ]
    assert json.loads(root.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Answer weather questions with the lookup tool."}
    ]
    tool = spans["execute_tool lookup"]
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert tool.attributes["gen_ai.tool.call.result"] == TOOL_RESULT
    chats = sorted(
        (s for s in receiver.trace(events[0].trace_id) if s.name.startswith("chat")),
        key=lambda s: s.attributes["orchestrion.step.seq"],
    )
    assert [json.loads(c.attributes["gen_ai.output.messages"]) for c in chats] == [
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "text", "content": "Checking the sky."},
                    {"type": "tool_call", "name": "lookup"},
                ],
                "finish_reason": "tool_calls",
            }
        ],
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": ANSWER}],
                "finish_reason": "stop",
            }
        ],
    ]


async def test_hundreds_of_runs_executed_concurrently_are_one_trace_each(
    store: str, receiver: Receiver, providers: Providers
) -> None:
    """A worker executing 8 runs at a time, 12 conversations of 10 turns each: the
    exporter follows every run through interleaved commits."""
    conversations, turns = 12, 10
    async with Orchestrion(
        store,
        agents=[weather_agent()],
        tracer_provider=providers.tracer,
        meter_provider=providers.meter,
    ) as orx:
        runs = [
            await orx.submit("weather", f"turn {t}", conversation=f"conv-{c}")
            for t in range(turns)
            for c in range(conversations)
        ]
        orx.worker.concurrency = 8
        await orx.work(drain=True)
        statuses = {(await orx.result(r.id)).status for r in runs}
        finished = {
            r.id: {e.span_id for e in await orx.store.read_events(r.id) if e.end is not None}
            for r in runs
        }
    providers.shutdown()
    assert statuses == {"succeeded"}
    assert len(receiver.spans) == 4 * len(runs)
    assert len({s.span_id for s in receiver.spans}) == len(receiver.spans)
    for run in runs:
        spans = receiver.trace(run.trace_id)
        assert len(spans) == 4, run.id
        (root,) = [s for s in spans if s.parent_span_id is None]
        assert root.span_id == run_span_id(run.id)
        assert root.attributes["gen_ai.conversation.id"] == run.conversation_id
        assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
        assert {s.span_id for s in spans} <= finished[run.id]
    (succeeded,) = points(receiver, "orchestrion.runs", **{"orchestrion.run.status": "succeeded"})
    assert succeeded.value == len(runs)
