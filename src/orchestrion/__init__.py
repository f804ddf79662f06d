"""orchestrion: the orchestration layer for LLM applications.

Durable journaled runs on SQLite, an agent loop with typed tools, streamed events and
traces of every step.
"""

from orchestrion.engine.agent import Agent
from orchestrion.engine.conversation import ConversationState
from orchestrion.errors import OrchestrionError
from orchestrion.models.messages import Message, ToolCall
from orchestrion.models.scripted import ScriptedModel, call, calls, raw_call, say
from orchestrion.observe.events import Event
from orchestrion.observe.trace import Span, render_text
from orchestrion.resilience.hedge import HedgePolicy
from orchestrion.resilience.retry import RetryPolicy
from orchestrion.runtime import Orchestrion, TurnResult
from orchestrion.tools.arguments import ArgumentPolicy
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, tool

__all__ = [
    "Agent",
    "ArgumentPolicy",
    "ConversationState",
    "Event",
    "HedgePolicy",
    "Message",
    "Orchestrion",
    "OrchestrionError",
    "RetryPolicy",
    "ScriptedModel",
    "Span",
    "Tool",
    "ToolCall",
    "ToolContext",
    "TurnResult",
    "call",
    "calls",
    "raw_call",
    "render_text",
    "say",
    "tool",
]
