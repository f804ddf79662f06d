"""Messages grouped into the units a context window keeps or drops whole.

A provider refuses a request whose tool result has no matching tool call before it, or
whose assistant tool call is not followed by a result for each of its calls. So a window
never splits an assistant message that calls tools from the results that answer it: the
message and its results are one unit. Every other message is a unit of its own. A unit
that is broken already (a result whose call is missing, a call missing a result) is
never sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrion.models.messages import Message


@dataclass(frozen=True, slots=True)
class Unit:
    """Positions `start` .. `end` (exclusive) of a message list, kept or dropped together."""

    start: int
    end: int
    complete: bool  # False: a tool result without its call, or a call missing a result

    def __len__(self) -> int:
        return self.end - self.start


def units(messages: Sequence[Message]) -> list[Unit]:
    """The units of `messages`, in order. A tool-calling assistant message absorbs the
    tool results that follow it and answer its calls (in any order); the unit is complete
    when every call got a result."""
    found: list[Unit] = []
    i, n = 0, len(messages)
    while i < n:
        message = messages[i]
        if message.role == "assistant" and message.tool_calls:
            waiting = {c.id for c in message.tool_calls}
            answered: set[str] = set()
            end = i + 1
            while end < n and messages[end].role == "tool":
                call_id = messages[end].tool_call_id
                if call_id not in waiting or call_id in answered:
                    break
                answered.add(call_id)
                end += 1
            found.append(Unit(i, end, complete=answered == waiting))
            i = end
        else:
            found.append(Unit(i, i + 1, complete=message.role != "tool"))
            i += 1
    return found


def pair_safe(messages: Sequence[Message]) -> list[Message]:
    """`messages` without the units that would make a provider refuse the request."""
    return [m for u in units(messages) if u.complete for m in messages[u.start : u.end]]


def is_pair_safe(messages: Sequence[Message]) -> bool:
    """Whether every tool result follows its call and every call has all its results."""
    return all(u.complete for u in units(messages))
