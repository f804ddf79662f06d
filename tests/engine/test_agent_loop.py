"""The agent loop end to end on the scripted model and a real SQLite file."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from orchestrion import (
    Agent,
    ConversationState,
    Orchestrion,
    RunFinished,
    TextDelta,
    ToolContext,
    tool,
)
from orchestrion.engine.conversation import check_transition
from orchestrion.errors import ConversationBusy, IllegalTransition, NotFound
from orchestrion.testing import ScriptedModel, call, calls, say

from .helpers import Counter, weather_agent


def store_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


async def test_streamed_turn_yields_deltas_then_a_complete_trace(db_path: Path) -> None:
    agent = weather_agent(Counter())
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        events = [e async for e in orx.stream("weather", "Weather in Paris?", conversation="c1")]
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == "Checking.It is sunny in Paris; Ada knows."
        durable = [e.seq for e in events if e.seq]
        assert durable == sorted(set(durable)), "durable events arrive once, in order"
        assert isinstance(events[-1], RunFinished) and events[-1].status == "succeeded"

        run_id = events[-1].run_id
        stored = await orx.store.read_events(run_id)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        roots = await orx.trace(run_id)
        assert len(roots) == 1
        spans = roots[0].walk()
        assert all(s.complete for s in spans)
        names = [s.name for s in spans if s.type == "step.finished"]
        assert names.count("chat weather-model") == 3
        assert sorted(n for n in names if n.startswith("execute_tool")) == [
            "execute_tool log_it",
            "execute_tool lookup",
            "execute_tool notify",
        ]
        assert all(s.trace_id == roots[0].trace_id for s in spans)
        assert roots[0].attributes["run.status"] == "succeeded"


async def test_tool_calls_of_one_response_run_concurrently(db_path: Path) -> None:
    barrier = asyncio.Barrier(2)

    @tool
    async def left() -> str:
        """Wait for right."""
        await asyncio.wait_for(barrier.wait(), timeout=5)  # sequential execution would hang
        return "left"

    @tool
    async def right() -> str:
        """Wait for left."""
        await asyncio.wait_for(barrier.wait(), timeout=5)
        return "right"

    model = ScriptedModel([calls(call("left"), call("right")), say("both done")])
    agent = Agent("pair", model=model, tools=[left, right])
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("pair", "go")
        assert result.status == "succeeded" and result.answer == "both done"
        history = await orx.history(result.conversation_id)
        tool_results = [m.content for m in history if m.role == "tool"]
        assert tool_results == ["left", "right"]  # results keep call order


async def test_tools_receive_idempotency_key_and_remaining_deadline(db_path: Path) -> None:
    seen: list[ToolContext] = []

    @tool
    async def probe(ctx: ToolContext) -> str:
        """Look at the context."""
        seen.append(ctx)
        return "ok"

    agent = Agent(
        "p", model=ScriptedModel([call("probe"), say("ok")]), tools=[probe], turn_timeout=60
    )
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("p", "probe")
    (ctx,) = seen
    assert ctx.idempotency_key == f"{result.run_id}:2"
    remaining = ctx.remaining()
    assert remaining is not None and 0 < remaining <= 60
    assert ctx.conversation_id == result.conversation_id and ctx.tenant == "default"


async def test_step_guard_fails_the_turn_cleanly(db_path: Path) -> None:
    @tool
    async def again() -> str:
        """Loop forever."""
        return "again"

    agent = Agent("loop", model=ScriptedModel([call("again")]), tools=[again], max_steps=3)
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("loop", "spin", conversation="c1")
        assert result.status == "failed"
        assert result.error is not None and result.error["type"] == "TooManySteps"
        assert result.answer == agent.degradation_message
        assert agent.model.calls == 3  # type: ignore[attr-defined]
        assert await orx.history("c1") == []  # a failed turn leaves the history alone
        conversation = await orx.store.get_conversation("c1")
        assert conversation.state == ConversationState.AWAITING_INPUT
        states = [
            e.attributes["to"]
            for e in await orx.store.read_events(result.run_id)
            if e.type == "state.changed"
        ]
        assert states[-2:] == ["ERROR_RECOVERY", "AWAITING_INPUT"]


async def test_unknown_tool_and_failing_tool_are_reported_to_the_model(db_path: Path) -> None:
    @tool
    async def explode() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    model = ScriptedModel([calls(call("pyhton"), call("explode")), say("recovered")])
    agent = Agent("t", model=model, tools=[explode])
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("t", "do it")
        assert result.status == "succeeded" and result.answer == "recovered"
        tool_messages = [m for m in await orx.history(result.conversation_id) if m.role == "tool"]
        assert all(m.is_error for m in tool_messages)
        assert "There is no tool 'pyhton'" in (tool_messages[0].content or "")
        assert "explode" in (tool_messages[0].content or "")  # lists what exists
        assert "disk on fire" in (tool_messages[1].content or "")


async def test_deadline_ends_a_hung_turn_with_the_degradation_answer(db_path: Path) -> None:
    @tool(timeout=None)
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(3600)
        return "never"

    agent = Agent(
        "slow", model=ScriptedModel([call("hang"), say("x")]), tools=[hang], turn_timeout=0.3
    )
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("slow", "wait", conversation="c1")
        assert result.status == "failed"
        assert result.error is not None and result.error["type"] == "DeadlineExceeded"
        assert result.answer == agent.degradation_message
        conversation = await orx.store.get_conversation("c1")
        assert conversation.state == ConversationState.AWAITING_INPUT


async def test_second_turn_queues_behind_the_first_by_default(db_path: Path) -> None:
    order: list[str] = []

    @tool
    async def slow(label: str) -> str:
        """Slow tool."""
        order.append(f"start {label}")
        await asyncio.sleep(0.2)
        order.append(f"end {label}")
        return label

    def script(request: Any) -> Any:
        from orchestrion.models.scripted import turn_position

        user = [m for m in request.messages if m.role == "user"][-1].content
        return call("slow", label=user) if turn_position(request) == 0 else say(f"done {user}")

    agent = Agent("q", model=ScriptedModel(script), tools=[slow])
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        first = asyncio.create_task(orx.send("q", "one", conversation="c1"))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(orx.send("q", "two", conversation="c1"))
        r1, r2 = await asyncio.gather(first, second)
        assert (r1.status, r2.status) == ("succeeded", "succeeded")
        assert order == ["start one", "end one", "start two", "end two"]
        history = await orx.history("c1")
        assert [m.content for m in history if m.role == "user"] == ["one", "two"]
        conversation = await orx.store.get_conversation("c1")
        assert conversation.version == 2


async def test_reject_policy_refuses_a_turn_for_a_busy_conversation(db_path: Path) -> None:
    agent = weather_agent(Counter(), busy_policy="reject")
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        first = await orx.submit("weather", "one", conversation="c1")
        with pytest.raises(ConversationBusy, match=first.id):
            await orx.submit("weather", "two", conversation="c1")
        assert len(await orx.store.list_runs(conversation_id="c1")) == 1


async def test_history_is_carried_into_the_next_turn(db_path: Path) -> None:
    seen_user_messages: list[list[str]] = []

    def script(request: Any) -> Any:
        seen_user_messages.append([m.content for m in request.messages if m.role == "user"])
        return say("noted")

    agent = Agent("h", model=ScriptedModel(script))
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        await orx.send("h", "first", conversation="c1")
        await orx.send("h", "second", conversation="c1")
    assert seen_user_messages == [["first"], ["first", "second"]]


async def test_cancel_stops_a_running_turn(db_path: Path) -> None:
    started = asyncio.Event()

    @tool(timeout=None)
    async def wait_forever() -> str:
        """Hang until cancelled."""
        started.set()
        await asyncio.sleep(3600)
        return "never"

    def script(request: Any) -> Any:
        from orchestrion.models.scripted import turn_position

        user = [m for m in request.messages if m.role == "user"][-1].content
        if user == "hang" and turn_position(request) == 0:
            return call("wait_forever")
        return say("done")

    agent = Agent("c", model=ScriptedModel(script), tools=[wait_forever])
    async with Orchestrion(store_url(db_path), agents=[agent], lease_seconds=0.6) as orx:
        run = await orx.submit("c", "hang", conversation="c1")
        consumer = asyncio.create_task(orx.send("c", "after", conversation="c1"))
        events = orx.events(run.id)
        driver = asyncio.create_task(_drain(events))
        await started.wait()
        await orx.cancel(run.id)
        await asyncio.wait_for(driver, timeout=10)
        cancelled = await orx.store.get_run(run.id)
        assert cancelled.status == "cancelled"
        after = await asyncio.wait_for(consumer, timeout=10)
        assert after.status == "succeeded"  # the queued turn behind it went ahead
        assert [m.content for m in await orx.history("c1") if m.role == "user"] == ["after"]


async def _drain(events: Any) -> list[Any]:
    return [e async for e in events]


async def test_unknown_and_foreign_ids_are_not_found(db_path: Path) -> None:
    agent = weather_agent(Counter())
    async with Orchestrion(store_url(db_path), agents=[agent], tenant="acme") as orx:
        result = await orx.send("weather", "hi", conversation="c1")
        for probe in (orx.trace("nope"), orx.history("nope"), orx.result("nope")):
            with pytest.raises(NotFound, match="nope"):
                await probe
        # Another tenant asking for acme's ids gets the very same answer as for unknown ids.
        with pytest.raises(NotFound):
            await orx.history("c1", tenant="globex")
        with pytest.raises(NotFound):
            await orx.result(result.run_id, tenant="globex")
        with pytest.raises(NotFound):
            await orx.cancel(result.run_id, tenant="globex")
        with pytest.raises(NotFound):
            await orx.submit("weather", "hijack", conversation="c1", tenant="globex")
        with pytest.raises(NotFound, match="unknown agent 'ghost'"):
            await orx.submit("ghost", "hi")


def test_state_machine_allows_the_turn_path_and_refuses_the_rest() -> None:
    S = ConversationState
    path = [
        S.AWAITING_INPUT,
        S.STREAMING_RESPONSE,
        S.PROCESSING_TOOLS,
        S.STREAMING_RESPONSE,
        S.AWAITING_INPUT,
    ]
    for a, b in itertools.pairwise(path):
        assert check_transition(a, b) == b
    assert check_transition(S.PROCESSING_TOOLS, S.ERROR_RECOVERY) == S.ERROR_RECOVERY
    with pytest.raises(IllegalTransition, match="AWAITING_INPUT -> PROCESSING_TOOLS"):
        check_transition(S.AWAITING_INPUT, S.PROCESSING_TOOLS)
    with pytest.raises(IllegalTransition, match="terminal"):
        check_transition(S.CLOSED, S.AWAITING_INPUT)
    with pytest.raises(IllegalTransition, match="unknown"):
        check_transition("DANCING", S.AWAITING_INPUT)


async def test_purge_deletes_expired_conversations_but_not_active_ones(db_path: Path) -> None:
    agent = weather_agent(Counter(), conversation_ttl=0.01)
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        done = await orx.send("weather", "hi", conversation="old")
        queued = await orx.submit("weather", "pending", conversation="busy")
        await asyncio.sleep(0.05)
        report = await orx.purge()
        assert report.conversations == 1 and report.runs == 1 and report.events > 0
        with pytest.raises(NotFound):
            await orx.history("old")
        with pytest.raises(NotFound):
            await orx.result(done.run_id)
        assert await orx.store.list_effects(conversation_id="old") == []
        assert (await orx.store.get_run(queued.id)).status == "queued"


async def test_a_tool_records_several_effects_under_named_parts(db_path: Path) -> None:
    outcomes: list[tuple[bool, bool, bool]] = []

    @tool(effect="write")
    async def order(ctx: ToolContext) -> str:
        """Charge, then email a receipt."""
        charged = await ctx.record_effect("charge", {"amount": 5})
        receipt = await ctx.record_effect("email", {"to": "ada"}, part="receipt")
        again = await ctx.record_effect("email", {"to": "ada"}, part="receipt")
        outcomes.append((charged, receipt, again))
        return "ordered"

    agent = Agent("o", model=ScriptedModel([call("order"), say("done")]), tools=[order])
    async with Orchestrion(store_url(db_path), agents=[agent]) as orx:
        result = await orx.send("o", "order")
        assert outcomes == [(True, True, False)]
        keys = sorted(e.idempotency_key for e in await orx.store.list_effects())
        assert keys == [f"{result.run_id}:2", f"{result.run_id}:2/receipt"]
