"""End-to-end turns where the model gets tool arguments (or its final answer) wrong."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from orchestrion import Agent, Orchestrion, ScriptedModel, ToolContext, raw_call, say, tool
from orchestrion.engine.runner import RunExecutor
from orchestrion.models.scripted import ScriptedReply
from orchestrion.tools.arguments import ArgumentPolicy

from .helpers import Crash


class Booked:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []


def booking_agent(
    booked: Booked, replies: list[ScriptedReply], *, crash: bool = False, **kwargs: object
) -> Agent:
    @tool(effect="write")
    async def book(customer_id: int, slot: str, ctx: ToolContext) -> str:
        """Book a slot."""
        booked.calls.append((customer_id, slot))
        await ctx.record_effect("booking", {"customer_id": customer_id, "slot": slot})
        if crash and len(booked.calls) == 1:
            raise Crash
        return f"booked {customer_id} at {slot}"

    return Agent("booker", model=ScriptedModel(replies, name="m"), tools=[book], **kwargs)  # type: ignore[arg-type]


async def events_of(orx: Orchestrion, run_id: str, prefix: str) -> list:
    return [e for e in await orx.store.read_events(run_id) if e.type.startswith(prefix)]


async def test_repairable_arguments_run_once_and_the_repair_is_traced(db_path: Path) -> None:
    booked = Booked()
    raw = "```json\n{'customer_id': '7', 'slot': 'noon',}\n```"
    agent = booking_agent(booked, [raw_call("book", raw), say("Booked.")])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me")
        assert result.status == "succeeded"
        assert booked.calls == [(7, "noon")]
        (repaired,) = await events_of(orx, result.run_id, "tool.arguments.repaired")
        assert repaired.attributes["raw"] == raw  # the model's exact output is kept
        assert repaired.attributes["repairs"]


async def test_invalid_arguments_are_reasked_and_the_fixed_call_runs(db_path: Path) -> None:
    booked = Booked()
    replies = [
        raw_call("book", '{"customer_id": "abc", "slot": "noon"}'),
        raw_call("book", '{"customer_id": 7, "slot": "noon"}'),
        say("Booked after a correction."),
    ]
    agent = booking_agent(booked, replies)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me", conversation="c1")
        assert result.status == "succeeded" and result.answer == "Booked after a correction."
        assert booked.calls == [(7, "noon")]  # the invalid call never executed
        (invalid,) = await events_of(orx, result.run_id, "tool.arguments.invalid")
        assert invalid.attributes["decision"] == "reask"
        assert invalid.attributes["raw"] == '{"customer_id": "abc", "slot": "noon"}'
        history = await orx.history("c1")
        reask = [m for m in history if m.role == "tool" and m.is_error]
        assert len(reask) == 1
        assert "customer_id" in (reask[0].content or "") and "integer" in (reask[0].content or "")


async def test_arguments_never_fixed_degrade_with_an_explanation(db_path: Path) -> None:
    booked = Booked()
    bad = raw_call("book", '{"customer_id": "abc"}')
    replies = [bad, bad, bad, say("I could not book that, sorry: the customer id was unclear.")]
    agent = booking_agent(booked, replies, argument_policy=ArgumentPolicy(max_reasks_per_tool=2))
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me", conversation="c1")
        assert result.status == "succeeded"
        assert result.answer.startswith("I could not book that")
        assert booked.calls == []
        decisions = [
            e.attributes["decision"]
            for e in await events_of(orx, result.run_id, "tool.arguments.invalid")
        ]
        assert decisions == ["reask", "reask", "exhausted"]
        history = await orx.history("c1")
        assert "[not executed]" in (history[-2].content or "")  # the structured failure


async def test_message_policy_ends_the_turn_with_the_configured_words(db_path: Path) -> None:
    booked = Booked()
    policy = ArgumentPolicy(
        max_reasks_per_tool=0,
        on_exhausted="message",
        exhausted_message="Our booking assistant is confused; a human will call you.",
    )
    agent = booking_agent(
        booked, [raw_call("book", "not json at all"), say("unreachable")], argument_policy=policy
    )
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me", conversation="c1")
        assert result.status == "succeeded"
        assert result.answer == policy.exhausted_message
        assert booked.calls == []
        assert agent.model.calls == 1  # type: ignore[attr-defined]
        roles = [m.role for m in await orx.history("c1")]
        assert roles == ["user", "assistant", "tool", "assistant"]  # well-formed history


async def test_arguments_cut_at_the_token_limit_are_never_executed(db_path: Path) -> None:
    booked = Booked()
    cut = raw_call("book", '{"customer_id": 7, "slot": "noon"}', finish_reason="length")
    agent = booking_agent(booked, [cut, say("Sorry, my answer was cut off.")])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me")
        assert result.status == "succeeded"
        assert booked.calls == []
        (invalid,) = await events_of(orx, result.run_id, "tool.arguments.invalid")
        assert invalid.attributes["status"] == "truncated"


async def test_unknown_tool_gets_the_closest_match(db_path: Path) -> None:
    booked = Booked()
    agent = booking_agent(
        booked,
        [
            raw_call("bok", '{"customer_id": 7, "slot": "noon"}'),
            raw_call("book", '{"customer_id": 7, "slot": "noon"}'),
            say("done"),
        ],
    )
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("booker", "book me", conversation="c1")
        assert booked.calls == [(7, "noon")]
        error = next(m for m in await orx.history("c1") if m.role == "tool" and m.is_error)
        assert "'book'" in (error.content or "")
        assert result.status == "succeeded"


async def test_a_replayed_turn_reaches_the_same_reask_decisions(db_path: Path) -> None:
    booked = Booked()
    replies = [
        raw_call("book", '{"customer_id": "x", "slot": "noon"}'),
        raw_call("book", '{"customer_id": 7, "slot": "noon"}'),
        say("ok"),
    ]
    crashing = booking_agent(booked, replies, crash=True)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[crashing]) as orx:
        run = await orx.submit("booker", "book me", conversation="c1")
        lease = await orx.store.claim(
            run.id, owner="a/1/1", expected_epoch=0, lease_seconds=30, now=time.time()
        )
        assert lease is not None
        with pytest.raises(Crash):
            await RunExecutor(orx.store, crashing, await orx.store.get_run(run.id), lease).execute()

    healthy = booking_agent(booked, replies)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[healthy]) as orx:
        lease = await orx.store.claim(
            run.id, owner="b/2/2", expected_epoch=1, lease_seconds=30, now=time.time(),
            dead_owner="a/1/1",
        )
        assert lease is not None
        status = await RunExecutor(
            orx.store, healthy, await orx.store.get_run(run.id), lease, resumed=True
        ).execute()
        assert status == "succeeded"
        assert healthy.model.calls == 1  # type: ignore[attr-defined]  # only the final answer
        assert len(await orx.store.list_effects(kind="booking")) == 1
        history = await orx.history("c1")
        assert [m.role for m in history] == [
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant",
        ]
        invalid = await events_of(orx, run.id, "tool.arguments.invalid")
        assert len(invalid) == 1  # the replay did not report the re-ask a second time


class Booking(BaseModel):
    customer_id: int
    slot: str


async def test_structured_answers_go_through_the_same_pipeline(db_path: Path) -> None:
    replies = [
        say('Here you go: ```json\n{"customer_id": "abc", "slot": "noon"}\n```'),
        say("```json\n{'customer_id': 7, 'slot': 'noon',}\n```"),
    ]
    agent = Agent("typed", model=ScriptedModel(replies), output_type=Booking)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("typed", "book me")
        assert result.status == "succeeded"
        run = await orx.store.get_run(result.run_id)
        assert run.result is not None and run.result["output"] == {"customer_id": 7, "slot": "noon"}
        kinds = [
            e.type
            for e in await orx.store.read_events(result.run_id)
            if e.type.startswith("output.")
        ]
        assert kinds == ["output.invalid", "output.validated"]


async def test_a_structured_answer_that_never_fits_fails_gracefully(db_path: Path) -> None:
    agent = Agent(
        "typed",
        model=ScriptedModel([say("no json here")]),
        output_type=Booking,
        argument_policy=ArgumentPolicy(max_reasks_per_tool=1),
    )
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("typed", "book me", conversation="c1")
        assert result.status == "failed"
        assert result.error is not None and result.error["type"] == "InvalidOutput"
        assert result.answer == agent.argument_policy.exhausted_message
        assert await orx.history("c1") == []
