"""Properties of the window selection itself (a pure function), over random histories:
whatever the budget, a request never splits a tool call from its results, always holds
what must be sent, opens its history part on a user message, and stays within the
budget whenever what must be sent fits it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrion import Message
from orchestrion.context import estimate_message, is_pair_safe, pair_safe
from orchestrion.context.selection import select
from orchestrion.context.units import units
from tests.context.strategies import histories, providers_accept, turns


def cost(messages: list[Message]) -> int:
    return sum(estimate_message(m) for m in messages)


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    turn=st.integers(0, 99).flatmap(lambda n: turns(100 + n, max_rounds=4)),
    cut=st.integers(0, 6),
    max_tokens=st.one_of(st.none(), st.integers(1, 8000)),
    max_messages=st.one_of(st.none(), st.integers(1, 40)),
    pinned=st.integers(0, 3),
)
def test_selection_is_pair_safe_and_keeps_what_must_be_sent(
    history: list[list[Message]],
    turn: list[Message],
    cut: int,
    max_tokens: int | None,
    max_messages: int | None,
    pinned: int,
) -> None:
    flat = [m for t in history for m in t]
    # The current turn as it grows: cut after any whole unit (a request is only ever
    # built between rounds, when every call of the turn has its results).
    bounds = [u.end for u in units(turn[:-1])]
    turn = turn[: bounds[min(cut, len(bounds) - 1)]]
    fixed = [
        Message.system("You are terse."),
        *[Message.user(f"pinned {i}") for i in range(pinned)],
    ]
    chosen = select(
        fixed=fixed,
        history=flat,
        turn=turn,
        count=estimate_message,
        max_tokens=max_tokens,
        max_messages=max_messages,
        extra_tokens=25,
    )
    sent = chosen.messages
    assert providers_accept(sent)
    assert sent[: len(fixed)] == fixed  # system prompt and pinned messages, first
    body = sent[len(fixed) :]
    assert turn[0] in body  # the question being answered
    newest = units(turn)[-1]
    assert body[-len(newest) :] == turn[newest.start :]  # and the newest unit, last
    history_part = body[: len(body) - (len(turn) - chosen.turn_dropped)]
    assert history_part == flat[chosen.history_start :]  # a contiguous, newest stretch
    if history_part:
        assert history_part[0].role == "user"
    assert chosen.tokens == 25 + cost(sent)
    must = 25 + cost(fixed) + cost(turn[:1]) + (cost(turn[newest.start :]) if len(turn) > 1 else 0)
    if max_tokens is not None and must <= max_tokens:
        assert chosen.tokens <= max_tokens
    if (
        max_messages is not None
        and len(turn[:1]) + (len(newest) if len(turn) > 1 else 0) <= max_messages
    ):
        assert len(body) <= max_messages


@settings(max_examples=200, deadline=None)
@given(history=histories(max_turns=6), drop=st.sets(st.integers(0, 200)))
def test_pair_safe_repairs_any_damage(history: list[list[Message]], drop: set[int]) -> None:
    """Whatever is cut out of a valid history (a user function may drop anything), what
    pair_safe keeps is sendable, and a valid history is left whole."""
    flat = [m for t in history for m in t]
    assert pair_safe(flat) == flat
    damaged = [m for i, m in enumerate(flat) if i not in drop]
    repaired = pair_safe(damaged)
    assert providers_accept(repaired) and is_pair_safe(repaired)
    assert all(m.role != "tool" or m in damaged for m in repaired)
