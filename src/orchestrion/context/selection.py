"""Choosing the messages of one request: what is always sent, then the newest that fit.

Pure functions over messages, so they can be checked exhaustively (the property tests
throw random histories at them). Always sent: the fixed part (system prompt, pinned
messages, summary) and the current turn's user message and newest unit. Then, newest
first and whole units only: the rest of the turn, then the history, while they fit the
token budget and the message limit. The history part starts on a user message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrion.context.units import Unit, units
from orchestrion.models.messages import Message

Count = Callable[[Message], int]


@dataclass(frozen=True, slots=True)
class Selection:
    messages: list[Message]  # the request's messages, in order
    tokens: int  # their estimated tokens (tools included)
    # Position in `history` of the first history message sent (its length when none is):
    # the history sent is the complete units from there on.
    history_start: int
    turn_dropped: int  # messages of the current turn left out (it alone overflowed)


def _cost(messages: Sequence[Message], unit: Unit, count: Count) -> int:
    return sum(count(m) for m in messages[unit.start : unit.end])


def select(
    *,
    fixed: Sequence[Message],
    history: Sequence[Message],
    turn: Sequence[Message],
    count: Count,
    max_tokens: int | None = None,
    max_messages: int | None = None,
    extra_tokens: int = 0,
) -> Selection:
    """The request's messages: `fixed`, then the newest whole units of `history` and
    `turn` within `max_tokens` (counting `extra_tokens`, e.g. tool definitions) and
    `max_messages` (history and turn messages). Broken units are never sent."""
    used = extra_tokens + sum(count(m) for m in fixed)
    room = float("inf") if max_tokens is None else max_tokens - used
    left = float("inf") if max_messages is None else max_messages

    turn_units = [u for u in units(turn) if u.complete]
    kept_turn: list[Unit] = []
    # The question being answered and the newest unit are sent whatever the budget.
    must = turn_units[:1] + turn_units[-1:] if len(turn_units) > 1 else turn_units
    for unit in must:
        kept_turn.append(unit)
        room -= _cost(turn, unit, count)
        left -= len(unit)
    middle = turn_units[1:-1]
    taken = 0
    for unit in reversed(middle):
        cost = _cost(turn, unit, count)
        if cost > room or len(unit) > left:
            break
        kept_turn.append(unit)
        room, left, taken = room - cost, left - len(unit), taken + 1
    turn_whole = taken == len(middle)

    kept: list[Unit] = []
    if turn_whole:
        for unit in reversed(units(history)):
            if not unit.complete:
                if kept:  # a gap would join units that were not adjacent: stop here
                    break
                continue
            cost = _cost(history, unit, count)
            if cost > room or len(unit) > left:
                break
            kept.append(unit)
            room, left = room - cost, left - len(unit)
        while kept and history[kept[-1].start].role != "user":
            kept.pop()  # the window opens on a user message
    kept.reverse()
    sent_history = [m for u in kept for m in history[u.start : u.end]]
    chosen_turn = sorted(kept_turn, key=lambda u: u.start)
    sent_turn = [m for u in chosen_turn for m in turn[u.start : u.end]]
    messages = [*fixed, *sent_history, *sent_turn]
    tokens = extra_tokens + sum(count(m) for m in messages)
    start = kept[0].start if kept else len(history)
    return Selection(messages, tokens, start, len(turn) - len(sent_turn))
