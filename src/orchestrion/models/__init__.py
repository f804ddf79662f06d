"""Models: the protocol, normalised messages, and the adapters behind it."""

from orchestrion.models.base import Model, ResponseAssembler, close_models, complete
from orchestrion.models.messages import (
    FinishDelta,
    Message,
    ModelDelta,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    new_tool_call_id,
)
from orchestrion.models.scripted import ScriptedModel, ScriptedReply, call, calls, raw_call, say

__all__ = [
    "FinishDelta",
    "Message",
    "Model",
    "ModelDelta",
    "ModelRequest",
    "ModelResponse",
    "ResponseAssembler",
    "ScriptedModel",
    "ScriptedReply",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "call",
    "calls",
    "close_models",
    "complete",
    "new_tool_call_id",
    "raw_call",
    "say",
]
