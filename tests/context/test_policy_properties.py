"""Every policy, through the real engine and store, over random conversations with
interleaved tool calls: no request a model receives has a tool result without its call
or a call without its results, and the system prompt and the pinned messages are always
in it. (Two turns per conversation: the second one reuses what the first stored, e.g. a
summary, or a history with summarised messages dropped.)"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrion import Agent, Message, Orchestrion, ScriptedModel, call, say, tool
from orchestrion.context import ContextPolicy, custom, keep_all, summarize, window
from tests.context.strategies import histories, providers_accept, unit_end
from tests.context.support import Recording, seed_turns

INSTRUCTIONS = "You are the support agent. Be brief."
_ids = itertools.count()


def dropping_some(messages: list[Message]) -> Sequence[Message]:
    """A careless user policy: drops messages by a hash of their text (deterministic)."""
    return [m for m in messages if zlib.crc32((m.content or "").encode()) % 3]


@st.composite
def policies(draw: st.DrawFn) -> ContextPolicy:
    kind = draw(st.sampled_from(["keep_all", "window", "summarize", "custom"]))
    if kind == "keep_all":
        return keep_all()
    if kind == "custom":
        return custom(dropping_some, load_messages=draw(st.one_of(st.none(), st.integers(1, 30))))
    budget = draw(st.integers(60, 1500))
    max_messages = draw(st.one_of(st.none(), st.integers(1, 25)))
    pinned = draw(st.integers(0, 4))
    if kind == "window":
        return window(budget, max_messages=max_messages, pinned=pinned)
    return summarize(
        budget,
        keep_recent=draw(st.integers(0, 8)),
        max_messages=max_messages,
        pinned=pinned,
        retain=draw(st.sampled_from(["all", "summary"])),
        model=ScriptedModel([say("The user asked about several things; all answered.")]),
    )


@tool
def lookup(q: str) -> str:
    """Look something up."""
    return f"found: {q}"


async def one_conversation(url: str, history: list[list[Message]], policy: ContextPolicy) -> None:
    model = Recording([call("lookup", "Checking.", q="x"), say("Here you are.")])
    agent = Agent("support", model=model, tools=[lookup], instructions=INSTRUCTIONS, context=policy)
    conversation = f"conv-{next(_ids)}"
    async with Orchestrion(url, agents=[agent]) as orx:
        await seed_turns(orx.store, conversation, history, agent="support")
        for question in ("first new question", "second new question"):
            result = await orx.send("support", question, conversation=conversation)
            assert result.status == "succeeded", result.error
    flat = [m for t in history for m in t]
    pinned = flat[: unit_end(flat, policy.pinned)]
    assert len(model.requests) == 4
    for request in model.requests:
        sent = list(request.messages)
        assert providers_accept(sent), [m.role for m in sent]
        assert sent[0] == Message.system(INSTRUCTIONS)
        assert sent[1 : 1 + len(pinned)] == pinned
        after_fixed = [m for m in sent[1 + len(pinned) :] if m.role != "system"]
        assert after_fixed and after_fixed[0].role != "tool"
        assert any(m.role == "user" and m.content and "new question" in m.content for m in sent)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(max_turns=10), policy=policies())
def test_no_policy_splits_tool_calls_or_loses_system_and_pinned_messages(
    store_url: str, history: list[list[Message]], policy: ContextPolicy
) -> None:
    asyncio.run(one_conversation(store_url, history, policy))
