"""Building each model request of a turn from its loaded context, by the agent's policy.

One `ContextBuilder` per turn. Each round it chooses the messages (summarising first when
the policy says so), runs the model step with them, and learns from the response: the
provider's count of input tokens calibrates the estimate. A context-length error makes it
shrink the budget once (to the limit the provider stated, when it stated one) and ask
again. Everything it decides depends only on what was stored when the run started and on
journaled step results, so a resumed turn builds the same requests.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrion.context.load import LoadedContext, Stored
from orchestrion.context.selection import select
from orchestrion.context.summary import summarize_step, summary_message
from orchestrion.context.tokens import estimate_tools
from orchestrion.context.units import pair_safe, units
from orchestrion.errors import StepFailed
from orchestrion.models.messages import Message, ModelResponse, ToolSpec

if TYPE_CHECKING:
    from orchestrion.engine.agent import TurnContext

# Asks the model with these messages, the model step carrying these attributes.
Ask = Callable[[tuple[Message, ...], dict[str, Any]], Awaitable[ModelResponse]]

# What providers say when the prompt is too long (OpenAI, then Anthropic), with numbers.
_OPENAI_LIMIT = re.compile(r"maximum context length is (\d+) tokens.*?(\d+) tokens", re.S)
_ANTHROPIC_LIMIT = re.compile(r"(\d+) tokens > (\d+) maximum")
SHRINK_MARGIN = 0.9  # of a stated limit: the estimate is not exact


def stated_limit(message: str) -> tuple[int, int] | None:
    """(the context window, the prompt's tokens) from a provider's context-length error."""
    found = _OPENAI_LIMIT.search(message)
    if found:
        return int(found.group(1)), int(found.group(2))
    found = _ANTHROPIC_LIMIT.search(message)
    if found:
        return int(found.group(2)), int(found.group(1))
    return None


@dataclass(frozen=True, slots=True)
class Built:
    messages: tuple[Message, ...]
    tokens: int  # estimated (calibrated) tokens of the request, tools included
    raw_tokens: int  # the same, uncalibrated: what a provider's count calibrates
    attributes: dict[str, Any]  # for the model step's events


class ContextBuilder:
    def __init__(
        self,
        ctx: TurnContext,
        loaded: LoadedContext,
        preamble: Sequence[Message],
        tools: Sequence[ToolSpec],
    ) -> None:
        self.ctx = ctx
        self.policy = ctx.agent.context_policy
        self.loaded = loaded
        self.estimator = loaded.estimator
        self.preamble = list(preamble)
        self.tools_raw = estimate_tools(tools)
        self.summary = loaded.base
        self.history: list[Stored] = list(loaded.history)
        self.limit = loaded.learned_limit  # a context window a provider stated
        self.budget = self.policy.max_tokens
        if self.budget is not None and self.limit is not None:
            self.budget = min(self.budget, int(self.limit * SHRINK_MARGIN))
        self.shrunk = False
        self.summary_failed = False
        # Stored messages the window held at the last request, with the turn's own (they
        # are stored when it ends): sizes the first read of the next turn.
        self.rows: int | None = None

    # ---- a round --------------------------------------------------------------------

    async def model_round(
        self, turn: Sequence[Message], round_number: int, ask: Ask
    ) -> ModelResponse:
        """Build the request, ask the model, shrink once and ask again after a
        context-length error (when the policy allows it)."""
        built = await self.build(turn, f"round {round_number}")
        try:
            response = await ask(built.messages, built.attributes)
        except StepFailed as exc:
            if (
                exc.error_type != "ContextLengthExceeded"
                or self.shrunk
                or not self.policy.may_shrink
            ):
                raise
            self._shrink(exc.message, built)
            built = await self.build(turn, f"round {round_number} shrink")
            response = await ask(built.messages, built.attributes)
        self.estimator.observe(built.raw_tokens, response.usage.input_tokens)
        return response

    def state(self) -> dict[str, Any]:
        """What the next turn of the conversation starts from (kept in the run's result)."""
        out: dict[str, Any] = {}
        if self.estimator.calibrated and self.estimator.exact is None:
            out["calibration"] = round(self.estimator.calibration, 4)
        if self.limit is not None:
            out["limit"] = self.limit
        if self.rows is not None:
            out["rows"] = self.rows
        return out

    def _shrink(self, message: str, built: Built) -> None:
        stated = stated_limit(message)
        if stated is not None:
            limit, prompt = stated
            self.limit = limit if self.limit is None else min(self.limit, limit)
            self.estimator.observe(built.raw_tokens, prompt)  # the provider's own count
            budget = int(limit * SHRINK_MARGIN)
        else:
            budget = built.tokens // 2
        self.budget = max(1, min(self.budget or budget, budget))
        self.shrunk = True

    # ---- choosing the messages --------------------------------------------------------

    async def build(self, turn: Sequence[Message], label: str) -> Built:
        policy = self.policy
        if policy.kind in ("keep_all", "custom"):
            conversation = [*(s.message for s in self.history), *turn]
            if policy.function is not None:
                conversation = list(policy.function(conversation))
            messages = [*self.preamble, *pair_safe(conversation)]
            return self._built(messages, {})
        if policy.kind == "summarize" and not self.summary_failed:
            await self._summarize_if_needed(turn, label)
        fixed = [*self.preamble, *(p.message for p in self.loaded.pinned)]
        if self.summary is not None:
            fixed.append(summary_message(self.summary))
        selection = select(
            fixed=fixed,
            history=[s.message for s in self.history],
            turn=turn,
            count=self.estimator.message,
            max_tokens=self.budget,
            max_messages=policy.max_messages,
            extra_tokens=self.estimator.scale(self.tools_raw),
        )
        first_sent = (
            self.history[selection.history_start].index
            if selection.history_start < len(self.history)
            else None
        )
        history_sent = len(self.history) - selection.history_start
        kept = len(self.history) if policy.kind == "summarize" else history_sent
        self.rows = kept + len(turn)
        attributes = self._window_attributes(first_sent, history_sent)
        if selection.turn_dropped:
            attributes["context.turn_trimmed"] = selection.turn_dropped
        return self._built(selection.messages, attributes)

    def _built(self, messages: list[Message], attributes: dict[str, Any]) -> Built:
        raw = self.tools_raw + sum(self.estimator.raw(m) for m in messages)
        tokens = self.estimator.scale(raw)
        base: dict[str, Any] = {
            "context.policy": self.policy.describe(),
            "context.message_count": len(messages),
            "context.estimated_tokens": tokens,
        }
        if self.estimator.calibrated:
            base["context.calibration"] = round(self.estimator.calibration, 3)
        return Built(tuple(messages), tokens, raw, {**base, **attributes})

    def _window_attributes(self, first_sent: int | None, history_sent: int) -> dict[str, Any]:
        """How the window relates to the stored history: what was sent, what not."""
        pinned_end = self.loaded.pinned_end
        older_end = first_sent if first_sent is not None else self.loaded.message_count
        covered = 0
        if self.summary is not None:
            covered = max(
                0, self.summary.last_index + 1 - max(self.summary.first_index, pinned_end)
            )
        trimmed = max(0, older_end - pinned_end - covered)
        attributes: dict[str, Any] = {
            "context.budget": self.budget,
            "context.history_count": history_sent,
            "context.pinned": len(self.loaded.pinned),
            "context.trimmed": trimmed,
            "context.summary": self.summary is not None,
        }
        if trimmed:
            attributes["context.trimmed_through"] = older_end - 1
        if self.summary is not None:
            attributes["context.summary.last_index"] = self.summary.last_index
        if self.shrunk:
            attributes["context.shrunk"] = True
        return attributes

    # ---- summaries --------------------------------------------------------------------

    async def _summarize_if_needed(self, turn: Sequence[Message], label: str) -> None:
        made = self.loaded.own.get(label)  # this run made it before it was interrupted
        fold = [] if made is not None else self._fold(turn)
        if made is None and not fold:
            return
        try:
            summary = await summarize_step(
                self.ctx,
                self.policy,
                label=label,
                previous=self.summary,
                fold=fold,
                made=made,
                pinned_end=self.loaded.pinned_end,
            )
        except StepFailed as exc:
            # Degrade to the plain window for the rest of the turn, and say so.
            self.summary_failed = True
            self.ctx.emitter.emit(
                "context.summary.failed",
                "context summary",
                status="error",
                attributes={
                    "error.type": exc.error_type,
                    "error.message": exc.message[:500],
                    "context.fallback": "window",
                    "context.label": label,
                },
            )
            return
        self.summary = summary
        self.history = [s for s in self.history if s.index > summary.last_index]

    def _fold(self, turn: Sequence[Message]) -> list[Stored]:
        """The stored messages to fold into the summary: none while everything fits the
        budget (and `max_messages`); else all but the newest `keep_recent` (whole units,
        and the kept part opening on a user message)."""
        assert self.budget is not None
        fixed = [*self.preamble, *(p.message for p in self.loaded.pinned)]
        if self.summary is not None:
            fixed.append(summary_message(self.summary))
        everything = [*fixed, *(s.message for s in self.history), *turn]
        total = self.estimator.scale(self.tools_raw) + self.estimator.messages(everything)
        limit = self.policy.max_messages
        too_many = limit is not None and len(self.history) + len(turn) > limit
        if (total <= self.budget and not too_many) or not self.history:
            return []
        messages = [s.message for s in self.history]
        found = units(messages)
        cut, kept = len(found), 0
        while cut > 0 and kept + len(found[cut - 1]) <= self.policy.keep_recent:
            cut -= 1
            kept += len(found[cut])
        while cut < len(found) and messages[found[cut].start].role != "user":
            cut += 1
        end = found[cut].start if cut < len(found) else len(messages)
        return self.history[:end]
