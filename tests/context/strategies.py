"""Random conversations for the property tests: turns of a user message, rounds of
tool calls each followed by its results (in any order), and a final answer."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from orchestrion import Message, ToolCall

ALPHABET = "abcdefghij klmnop,.éü中"


@st.composite
def texts(draw: st.DrawFn, max_size: int = 1200) -> str:
    size = draw(st.integers(0, max_size))
    seed = draw(st.text(alphabet=ALPHABET, min_size=1, max_size=12))
    return (seed * (size // len(seed) + 1))[:size]


@st.composite
def turns(draw: st.DrawFn, number: int, max_rounds: int = 3) -> list[Message]:
    messages = [Message.user(f"q{number} " + draw(texts()))]
    for r in range(draw(st.integers(0, max_rounds))):
        calls = tuple(
            ToolCall(
                id=f"call_{number}_{r}_{i}",
                name="lookup",
                arguments=json.dumps({"q": draw(texts(max_size=200))}),
            )
            for i in range(draw(st.integers(1, 3)))
        )
        text = draw(st.one_of(st.none(), texts(max_size=200)))
        messages.append(Message.assistant(text, calls))
        results = [Message.tool_result(c, draw(texts())) for c in calls]
        messages.extend(draw(st.permutations(results)))
    messages.append(Message.assistant(f"a{number} " + draw(texts())))
    return messages


@st.composite
def histories(draw: st.DrawFn, max_turns: int = 12) -> list[list[Message]]:
    count = draw(st.integers(0, max_turns))
    return [draw(turns(i)) for i in range(count)]


def unit_end(messages: list[Message], count: int) -> int:
    """The first position at or after `count` where a new unit starts (a message that is
    not a tool result), or the end: how far `pinned=count` reaches."""
    position = count
    while position < len(messages) and messages[position].role == "tool":
        position += 1
    return min(position, len(messages))


def providers_accept(messages: list[Message]) -> bool:
    """What providers check, written out independently of orchestrion's own code: every
    tool result answers a call of the assistant message just before the results, and
    every call of such a message gets its result before the conversation goes on."""
    waiting: set[str] = set()
    answered: set[str] = set()
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id not in waiting or message.tool_call_id in answered:
                return False
            answered.add(message.tool_call_id)
            continue
        if waiting != answered:
            return False  # a call went unanswered
        waiting, answered = set(), set()
        if message.role == "assistant":
            waiting = {c.id for c in message.tool_calls}
    return waiting == answered
