"""The conversation state machine. Transitions are explicit; an illegal one is a bug.

Two states end a conversation: CLOSED, entered when it is closed explicitly
(`Orchestrion.close_conversation`; only while no turn is in flight), and EXPIRED, which
is observed rather than written: a conversation at rest (no queued or running turn) whose
expiry has passed is EXPIRED, refuses new turns, and is deleted by the next purge.
"""

from __future__ import annotations

from enum import StrEnum

from orchestrion.errors import IllegalTransition


class ConversationState(StrEnum):
    AWAITING_INPUT = "AWAITING_INPUT"
    STREAMING_RESPONSE = "STREAMING_RESPONSE"
    PROCESSING_TOOLS = "PROCESSING_TOOLS"
    ERROR_RECOVERY = "ERROR_RECOVERY"
    CLOSED = "CLOSED"
    EXPIRED = "EXPIRED"


S = ConversationState
WORKING = frozenset({S.STREAMING_RESPONSE, S.PROCESSING_TOOLS})
TERMINAL = frozenset({S.CLOSED, S.EXPIRED})

TRANSITIONS: dict[ConversationState, frozenset[ConversationState]] = {
    S.AWAITING_INPUT: frozenset({S.STREAMING_RESPONSE, S.CLOSED, S.EXPIRED}),
    S.STREAMING_RESPONSE: frozenset({S.PROCESSING_TOOLS, S.AWAITING_INPUT, S.ERROR_RECOVERY}),
    S.PROCESSING_TOOLS: frozenset({S.STREAMING_RESPONSE, S.AWAITING_INPUT, S.ERROR_RECOVERY}),
    # From recovery a turn either carries on or ends cleanly (failed, cancelled).
    S.ERROR_RECOVERY: frozenset(
        {S.STREAMING_RESPONSE, S.PROCESSING_TOOLS, S.AWAITING_INPUT, S.CLOSED}
    ),
    S.CLOSED: frozenset(),
    S.EXPIRED: frozenset(),
}


def check_transition(current: str, new: str) -> ConversationState:
    """Return the new state, or raise IllegalTransition naming both ends."""
    try:
        source, target = ConversationState(current), ConversationState(new)
    except ValueError as exc:
        raise IllegalTransition(f"unknown conversation state in {current!r} -> {new!r}") from exc
    if target not in TRANSITIONS[source]:
        allowed = ", ".join(sorted(TRANSITIONS[source])) or "none (terminal state)"
        raise IllegalTransition(
            f"illegal conversation transition {source} -> {target}; from {source} the "
            f"allowed transitions are: {allowed}"
        )
    return target


def observed_state(
    stored: str, *, expires_at: float, now: float, turn_in_flight: bool
) -> ConversationState:
    """The state a reader sees: EXPIRED once a conversation at rest passed its expiry
    (the store refuses its turns from then on), else the stored state."""
    state = ConversationState(stored)
    if state not in TERMINAL and not turn_in_flight and expires_at < now:
        return S.EXPIRED
    return state
