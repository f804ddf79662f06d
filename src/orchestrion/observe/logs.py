"""Logs as JSON lines, correlated with runs and traces.

    configure_logging("json")   # what `orchestrion --log-format json` does

writes one JSON object per line to stderr: time, level, logger, message, and, while a run
executes, its `run_id`, `conversation_id`, `trace_id` and `span_id` (the step being
executed, else the run's root span). Those are the ids `orchestrion trace` shows and the
OpenTelemetry export uses, so a log line, a trace line and a span name each other.

Never logged: API keys (anything shaped like one is masked) and, unless
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is true, message content passed in
`extra` (fields such as `text`, `content`, `arguments`, `result`, `answer`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, TextIO

from orchestrion.observe.events import run_span_id

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Values of the variable that turn capture on (the spec's booleans, and the newer
# conventions' modes that put content on spans).
_CAPTURE_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})
MASK = "[redacted]"


def capture_content_enabled() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_ON


@dataclass(frozen=True, slots=True)
class RunContext:
    run_id: str
    conversation_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


_RUN: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "orchestrion_run", default=None
)


def current_run_context() -> RunContext | None:
    return _RUN.get()


@contextlib.contextmanager
def bind_run_context(
    run_id: str,
    *,
    conversation_id: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> Iterator[RunContext]:
    """Log records made inside carry these ids (tasks started inside inherit them); the
    span is the run's root span unless another is named."""
    span_id = span_id or run_span_id(run_id)
    token = _RUN.set(RunContext(run_id, conversation_id, trace_id, span_id))
    try:
        yield _RUN.get()  # type: ignore[misc]
    finally:
        _RUN.reset(token)


@contextlib.contextmanager
def bind_span(span_id: str) -> Iterator[None]:
    """Inside a run: log records made inside name this span (a step's) instead."""
    current = _RUN.get()
    if current is None:
        yield
        return
    token = _RUN.set(replace(current, span_id=span_id))
    try:
        yield
    finally:
        _RUN.reset(token)


# ---- redaction ---------------------------------------------------------------------------

# Shapes of secrets (provider keys, bearer tokens, key=value pairs naming a key), each
# with what replaces it.
_SECRET_PATTERNS = (
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,}"), MASK),
    (re.compile(r"\b(?:xai-|gsk_|AIza)[A-Za-z0-9_\-]{12,}"), MASK),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {MASK}"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|x-api-key|authorization|password|secret|access[_-]?token)"
            r"(\"?\s*[:=]\s*\"?)[^\s\",;]+"
        ),
        rf"\1\2{MASK}",
    ),
)
_SECRET_KEYS = re.compile(r"(?i)(api[_-]?key|authorization|password|secret|token)")
# `extra` fields that carry what users and models said (kept only when capture is on).
CONTENT_KEYS = frozenset(
    {"text", "content", "arguments", "result", "answer", "messages", "raw", "prompt", "input"}
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# ---- the formatter -----------------------------------------------------------------------

# Attributes every LogRecord has: everything else on a record came from `extra`.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Ids of the run being executed are added; `extra`
    fields are kept (JSON-encoded, secrets masked, content only when opted in)."""

    def __init__(self, *, capture_content: bool | None = None) -> None:
        super().__init__()
        self.capture_content = capture_content

    def format(self, record: logging.LogRecord) -> str:
        capture = (
            capture_content_enabled() if self.capture_content is None else self.capture_content
        )
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        ctx = _RUN.get()
        if ctx is not None:
            out["run_id"] = ctx.run_id
            for key in ("conversation_id", "trace_id", "span_id"):
                value = getattr(ctx, key)
                if value:
                    out[key] = value
        for key, value in record.__dict__.items():
            if key in _RECORD_FIELDS or key.startswith("_") or key in out:
                continue
            if key in CONTENT_KEYS and not capture:
                continue
            if _SECRET_KEYS.search(key):
                out[key] = MASK
                continue
            out[key] = _jsonable(value)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {
            str(k): MASK if _SECRET_KEYS.search(str(k)) else _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return redact(str(value))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(
    fmt: LogFormat = "text", *, level: int = logging.WARNING, stream: TextIO | None = None
) -> logging.Handler:
    """Send the process's logs to `stream` (default: stderr) as text or JSON lines,
    replacing the handler a previous call installed. Returns the handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r} is not one of: text, json")
    handler: logging.Handler = _Stderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("orchestrion")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "orchestrion":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
