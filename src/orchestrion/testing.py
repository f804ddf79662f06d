"""Test doubles: a deterministic scripted model and the helpers that write its replies.

    from orchestrion.testing import ScriptedModel, call, say

    model = ScriptedModel([call("lookup", city="Paris"), say("It is sunny in Paris.")])

Nothing here talks to a network or keeps hidden state: a reply is chosen from the request
alone, so a turn resumed in another process gets the same reply. For a fake provider
that speaks the real OpenAI and Anthropic wire protocols (and injects their failures),
see `orchestrion.chaos.testing.running_chaos_server` (docs/chaos.md).
"""

from orchestrion.models.scripted import (
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    call,
    calls,
    raw_call,
    say,
    turn_position,
)

__all__ = [
    "ScriptedCall",
    "ScriptedModel",
    "ScriptedReply",
    "call",
    "calls",
    "raw_call",
    "say",
    "turn_position",
]
