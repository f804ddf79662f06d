"""W3C Trace Context `traceparent` headers: parsed here, without OpenTelemetry installed.

A run submitted with a traceparent joins the caller's trace: its trace id becomes the
run's, and the run's root span is exported as a child of the caller's span.
https://www.w3.org/TR/trace-context/#traceparent-header
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits: the caller's span, our root span's parent
    sampled: bool

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The parent a header names, or None when it is absent or malformed (the W3C rule:
    an invalid traceparent is ignored and a new trace starts)."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip().lower())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None  # ff is forbidden; version 00 has exactly four fields
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceParent(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def valid_traceparent(value: str | None) -> str | None:
    """For HTTP services: the header (normalised) when it is valid, else None."""
    parent = parse_traceparent(value)
    return None if parent is None else parent.header


def require_traceparent(value: str) -> TraceParent:
    """For library callers: a malformed traceparent is a mistake worth an error."""
    parent = parse_traceparent(value)
    if parent is None:
        raise ValueError(
            f"traceparent {value[:80]!r} is not a W3C traceparent; expected "
            "'00-<32 hex trace id>-<16 hex span id>-<2 hex flags>'"
        )
    return parent
