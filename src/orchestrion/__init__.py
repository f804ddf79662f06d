"""orchestrion: the orchestration layer for LLM applications.

Durable journaled runs on SQLite or PostgreSQL, an agent loop with typed tools, typed
streamed events and traces of every step.

What production code needs is importable from here: the runtime, agents and tools,
models (`resolve_model`, the provider adapters), the typed events a turn streams, and the
errors worth catching. Test doubles (the scripted model) live in `orchestrion.testing`;
they are re-exported here only for compatibility.
"""

from orchestrion.engine.agent import Agent
from orchestrion.engine.conversation import ConversationState
from orchestrion.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextLengthExceeded,
    ConversationBusy,
    ConversationClosed,
    ConversationEnded,
    ConversationExpired,
    DeadlineExceeded,
    IllegalTransition,
    InvalidOutput,
    LeaseLost,
    MalformedResponse,
    NonDeterminismError,
    NoStore,
    NotFound,
    OrchestrionError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RunCancelled,
    StepFailed,
    StoreBusy,
    StoreError,
    TooManySteps,
)
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.base import Model
from orchestrion.models.messages import Message, ToolCall
from orchestrion.models.openai import OpenAIModel
from orchestrion.models.resolve import ModelConfigError, resolve_model
from orchestrion.observe.public import (
    ArgumentsInvalid,
    ArgumentsRepaired,
    BaseEvent,
    BreakerChanged,
    BreakerRejected,
    Event,
    FallbackFailed,
    FallbackUsed,
    HedgeFired,
    HedgeWon,
    ModelResponded,
    OtherEvent,
    OutputInvalid,
    OutputValidated,
    RetryAttempted,
    RetryBudgetRefused,
    RetryGaveUp,
    RetryScheduled,
    RunError,
    RunFinished,
    RunQueued,
    RunResumed,
    RunStarted,
    StateChanged,
    StepFinished,
    StepStarted,
    TextDelta,
    TextReset,
    ToolCallFinished,
    ToolCallStarted,
    ToolProgress,
    parse_event,
)
from orchestrion.observe.trace import Span, render_text
from orchestrion.resilience.errors import BreakerOpen, RetryBudgetExhausted
from orchestrion.resilience.hedge import HedgePolicy
from orchestrion.resilience.retry import RetryPolicy
from orchestrion.resilience.settings import BreakerSettings
from orchestrion.runtime import ConversationInfo, Orchestrion, TurnResult
from orchestrion.store.base import BusyPolicy, RunStatus

# Test doubles, kept here for compatibility: import them from orchestrion.testing.
from orchestrion.testing import ScriptedModel, call, calls, raw_call, say
from orchestrion.tools.arguments import ArgumentPolicy
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, tool

__all__ = [
    "Agent",
    "AnthropicModel",
    "ArgumentPolicy",
    "ArgumentsInvalid",
    "ArgumentsRepaired",
    "AuthenticationFailed",
    "BadRequest",
    "BaseEvent",
    "BreakerChanged",
    "BreakerOpen",
    "BreakerRejected",
    "BreakerSettings",
    "BusyPolicy",
    "ContextLengthExceeded",
    "ConversationBusy",
    "ConversationClosed",
    "ConversationEnded",
    "ConversationExpired",
    "ConversationInfo",
    "ConversationState",
    "DeadlineExceeded",
    "Event",
    "FallbackFailed",
    "FallbackUsed",
    "HedgeFired",
    "HedgePolicy",
    "HedgeWon",
    "IllegalTransition",
    "InvalidOutput",
    "LeaseLost",
    "MalformedResponse",
    "Message",
    "Model",
    "ModelConfigError",
    "ModelResponded",
    "NoStore",
    "NonDeterminismError",
    "NotFound",
    "OpenAIModel",
    "Orchestrion",
    "OrchestrionError",
    "OtherEvent",
    "OutputInvalid",
    "OutputValidated",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RetryAttempted",
    "RetryBudgetExhausted",
    "RetryBudgetRefused",
    "RetryGaveUp",
    "RetryPolicy",
    "RetryScheduled",
    "RunCancelled",
    "RunError",
    "RunFinished",
    "RunQueued",
    "RunResumed",
    "RunStarted",
    "RunStatus",
    "ScriptedModel",
    "Span",
    "StateChanged",
    "StepFailed",
    "StepFinished",
    "StepStarted",
    "StoreBusy",
    "StoreError",
    "TextDelta",
    "TextReset",
    "TooManySteps",
    "Tool",
    "ToolCall",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolContext",
    "ToolProgress",
    "TurnResult",
    "call",
    "calls",
    "parse_event",
    "raw_call",
    "render_text",
    "resolve_model",
    "say",
    "tool",
]
