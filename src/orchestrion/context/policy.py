"""Context policies: what of a conversation goes into each model request.

    Agent("support", model=..., context=window(max_tokens=8_000))
    Agent("support", model=..., context=summarize(max_tokens=8_000, keep_recent=12))
    Agent("support", model=..., context=keep_all())
    Agent("support", model=..., context=my_function)  # (messages) -> messages to send

Every policy keeps the system prompt (the agent's instructions) and the conversation's
pinned messages, never splits an assistant tool call from its results, and never starts
the window on a tool result. See docs/context.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from orchestrion.models.base import Model
from orchestrion.models.messages import Message

PolicyKind = Literal["keep_all", "window", "summarize", "custom"]
Retain = Literal["all", "summary"]
# A user-supplied policy: given the conversation's messages (the loaded history, then the
# current turn; no system prompt), the messages to send. It must be deterministic (a
# resumed turn builds its requests again). Broken tool-call pairs in what it returns are
# left out, and the system prompt is always added.
ContextFunction = Callable[[list[Message]], Sequence[Message]]

DEFAULT_MAX_TOKENS = 16_000
SUMMARY_INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an assistant. "
    "Update the summary with the new messages. Keep every fact, name, number, decision, "
    "commitment and open question needed to continue the conversation; drop small talk. "
    "Answer with the updated summary only, in plain sentences."
)


@dataclass(frozen=True)
class ContextPolicy:
    """How an agent's model requests are built from its conversation. Make one with
    `keep_all()`, `window(...)`, `summarize(...)` or `custom(...)`."""

    kind: PolicyKind
    max_tokens: int | None = None  # the budget of the whole request (prompt and tools)
    max_messages: int | None = None  # at most this many conversation messages
    pinned: int = 0  # the conversation's first messages, always sent
    keep_recent: int = 20  # summarize: messages kept verbatim after folding
    model: Model | None = None  # summarize: who writes summaries (None: the agent's model)
    summary_tokens: int = 500  # summarize: the longest summary asked for
    instructions: str = SUMMARY_INSTRUCTIONS
    retain: Retain = "all"  # "summary": drop stored messages once summarised
    shrink_on_overflow: bool = True  # retry once with less after a context-length error
    function: ContextFunction | None = None
    load_messages: int | None = None  # custom: how many recent messages it is given

    @property
    def budgeted(self) -> bool:
        return self.kind in ("window", "summarize")

    @property
    def may_shrink(self) -> bool:
        return self.budgeted and self.shrink_on_overflow

    def describe(self) -> str:
        """Short, for traces: `window(max_tokens=8000)`."""
        if self.kind == "keep_all":
            return "keep_all()"
        if self.kind == "custom":
            name = getattr(self.function, "__name__", "function")
            return f"custom({name})"
        parts = [f"max_tokens={self.max_tokens}"]
        if self.max_messages is not None:
            parts.append(f"max_messages={self.max_messages}")
        if self.pinned:
            parts.append(f"pinned={self.pinned}")
        if self.kind == "summarize":
            parts.append(f"keep_recent={self.keep_recent}")
            if self.retain != "all":
                parts.append(f"retain={self.retain!r}")
        return f"{self.kind}({', '.join(parts)})"


def _positive(name: str, value: int | None, policy: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{policy}: {name} must be a whole number of at least 1, not {value!r}")


def _not_negative(name: str, value: int, policy: str) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{policy}: {name} must be a whole number, 0 or more, not {value!r}")


def keep_all() -> ContextPolicy:
    """Send the whole history every turn: the cost of a turn grows with the conversation,
    and past the model's context window turns fail. For short conversations only."""
    return ContextPolicy("keep_all", shrink_on_overflow=False)


def window(
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    max_messages: int | None = None,
    pinned: int = 0,
    shrink_on_overflow: bool = True,
) -> ContextPolicy:
    """The most recent messages that fit `max_tokens` (counting the system prompt, the
    pinned messages and the tool definitions), and at most `max_messages` of them.
    `pinned`: the conversation's first N messages are always sent (e.g. the request that
    opened it). Older messages stay stored; they are just not sent."""
    _positive("max_tokens", max_tokens, "window")
    _positive("max_messages", max_messages, "window")
    _not_negative("pinned", pinned, "window")
    return ContextPolicy(
        "window",
        max_tokens=max_tokens,
        max_messages=max_messages,
        pinned=pinned,
        shrink_on_overflow=shrink_on_overflow,
    )


def summarize(
    max_tokens: int = DEFAULT_MAX_TOKENS,
    *,
    keep_recent: int = 20,
    model: Model | str | None = None,
    max_messages: int | None = None,
    pinned: int = 0,
    summary_tokens: int = 500,
    instructions: str = SUMMARY_INSTRUCTIONS,
    retain: Retain = "all",
    shrink_on_overflow: bool = True,
) -> ContextPolicy:
    """Like `window`, but when the unsummarised messages no longer fit `max_tokens`, the
    older ones (all but the `keep_recent` newest) are folded into a running summary by
    `model` (default: the agent's), a journaled step whose result is stored with the
    conversation and reused by later turns. `retain="summary"` deletes stored messages
    once summarised (the pinned ones stay); the default keeps the full history."""
    _positive("max_tokens", max_tokens, "summarize")
    _positive("max_messages", max_messages, "summarize")
    _positive("summary_tokens", summary_tokens, "summarize")
    _not_negative("keep_recent", keep_recent, "summarize")
    _not_negative("pinned", pinned, "summarize")
    if retain not in ("all", "summary"):
        raise ValueError(f"summarize: retain must be 'all' or 'summary', not {retain!r}")
    if isinstance(model, str):
        from orchestrion.models.resolve import resolve_model

        model = resolve_model(model)
    elif model is not None and not isinstance(model, Model):
        raise TypeError(
            f"summarize: model must be a Model or a spec string such as "
            f"'openai:gpt-4o-mini', not {type(model).__name__}"
        )
    return ContextPolicy(
        "summarize",
        max_tokens=max_tokens,
        max_messages=max_messages,
        pinned=pinned,
        keep_recent=keep_recent,
        model=model,
        summary_tokens=summary_tokens,
        instructions=instructions,
        retain=retain,
        shrink_on_overflow=shrink_on_overflow,
    )


def custom(function: ContextFunction, *, load_messages: int | None = None) -> ContextPolicy:
    """Your own policy: `function(messages)` returns the messages to send. It is given the
    newest `load_messages` of the history (None: all of it) and the current turn."""
    if not callable(function):
        raise TypeError(f"custom: expected a function of the messages, not {function!r}")
    _positive("load_messages", load_messages, "custom")
    return ContextPolicy(
        "custom", function=function, load_messages=load_messages, shrink_on_overflow=False
    )


DEFAULT_CONTEXT = window()


def as_policy(value: ContextPolicy | ContextFunction | None) -> ContextPolicy:
    """What `Agent(context=...)` accepts, as a policy (None: the default window)."""
    if value is None:
        return DEFAULT_CONTEXT
    if isinstance(value, ContextPolicy):
        return value
    if callable(value):
        return custom(value)
    raise TypeError(
        "context must be a policy (keep_all(), window(...), summarize(...)) or a function "
        f"of the messages, not {type(value).__name__}"
    )
