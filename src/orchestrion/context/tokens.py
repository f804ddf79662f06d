"""Counting tokens offline: an estimate, calibrated by what the provider reports.

Nothing here downloads a tokenizer (tiktoken, for one, fetches its encodings from the
internet on first use). The estimate is the UTF-8 size of what a message carries divided
by four, plus a few tokens of framing per message: close for English text and JSON, and
conservative for most other scripts. Each model response reports the input tokens the
provider counted for the request; their ratio to the estimate of that request is the
conversation's calibration, which scales every later estimate (it is carried from turn
to turn in the run's result). A model object that can count exactly without a download
may say so with a `count_tokens(messages) -> int` method; then its count is used as is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from orchestrion.models.messages import Message, ToolSpec

BYTES_PER_TOKEN = 4.0
MESSAGE_OVERHEAD = 4  # role and separators, as chat formats add around each message
CALL_OVERHEAD = 8  # a tool call's id, type and framing
# A calibration outside these bounds says more about a provider's odd report than about
# the text: it is clamped, so one strange number cannot empty or overfill a window.
MIN_CALIBRATION, MAX_CALIBRATION = 0.25, 4.0


@runtime_checkable
class TokenCounter(Protocol):
    """A model that counts its own tokens exactly, offline."""

    def count_tokens(self, messages: Sequence[Message]) -> int: ...


def counter_of(model: object) -> TokenCounter | None:
    """The model's own offline token counter, when it has one."""
    return model if isinstance(model, TokenCounter) else None


def _tokens(size: int) -> int:
    return math.ceil(size / BYTES_PER_TOKEN)


def estimate_message(message: Message) -> int:
    """The uncalibrated estimate of one message's tokens."""
    size = len((message.content or "").encode())
    calls = 0
    for call in message.tool_calls:
        size += len(call.name) + len(call.arguments.encode())
        calls += CALL_OVERHEAD
    return MESSAGE_OVERHEAD + calls + _tokens(size)


def estimate_tools(tools: Sequence[ToolSpec]) -> int:
    """The uncalibrated estimate of the tool definitions a request carries."""
    if not tools:
        return 0
    return _tokens(len(json.dumps([t.model_dump() for t in tools], separators=(",", ":"))))


def clamp_calibration(value: float) -> float:
    return min(MAX_CALIBRATION, max(MIN_CALIBRATION, value))


class Estimator:
    """Tokens of messages for one conversation: the estimate times its calibration, or a
    model's exact count when it has one."""

    def __init__(self, calibration: float | None = None, exact: TokenCounter | None = None):
        self.calibration = clamp_calibration(calibration) if calibration else 1.0
        self.calibrated = calibration is not None
        self.exact = exact

    def raw(self, message: Message) -> int:
        if self.exact is not None:
            return self.exact.count_tokens([message])
        return estimate_message(message)

    def scale(self, raw: int) -> int:
        return raw if self.exact is not None else math.ceil(raw * self.calibration)

    def message(self, message: Message) -> int:
        return self.scale(self.raw(message))

    def messages(self, messages: Sequence[Message]) -> int:
        return sum(self.message(m) for m in messages)

    def observe(self, raw_estimate: int, reported: int) -> None:
        """Learn from a request whose uncalibrated estimate was `raw_estimate` and whose
        input the provider counted as `reported` tokens (0: it did not say)."""
        if self.exact is not None or raw_estimate <= 0 or reported <= 0:
            return
        seen = reported / raw_estimate
        if self.calibrated:
            seen = (self.calibration + seen) / 2  # smooth: one odd report moves it halfway
        self.calibration = clamp_calibration(seen)
        self.calibrated = True
