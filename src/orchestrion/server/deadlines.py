"""Deadlines for slow clients: a request's headers and its body must arrive in time.

Why our own protocol class: uvicorn bounds only the idle time between two requests
(`timeout_keep_alive`, and that timer is cancelled by the first byte received), so a
client that dribbles its headers or its body a byte at a time holds a connection for as
long as it likes (slowloris). uvicorn has no request timeouts (its issue #157 is open
since 2018), and an ASGI middleware cannot help: the app is called only once the headers
are complete, and a body nobody reads is never seen by the app. So the uvicorn HTTP
protocol is subclassed, and each connection's phase is watched:

- waiting for a request's headers (from the connection's start, or from the end of the
  previous response): at most `header_timeout` seconds;
- receiving a request's body (from the end of its headers): at most `body_timeout`;
- executing the request and streaming the response (SSE): no deadline here.

When a deadline passes, the connection is closed, after a `408` if no response was
started and part of a request had arrived (an idle connection is just closed, as
keep-alive does). The app sees a client that went away.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("orchestrion.server")

# (phase, the request/response cycle it belongs to)
_Phase = tuple[str, object]


class _RequestDeadlines(asyncio.Protocol):
    """Mixed into a uvicorn HTTP protocol class (h11 or httptools): both keep the
    current request/response cycle in `self.cycle`, whose `more_body` says whether the
    body is still arriving and `response_started`/`response_complete` where the answer is."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    transport: asyncio.Transport
    cycle: Any
    client: tuple[str, int] | None
    _deadline: asyncio.TimerHandle | None = None
    _phase: _Phase | None = None
    _partial = False  # bytes of the awaited request arrived in this phase

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase is not None and self._phase[0] == "headers" and data:
            self._partial = True
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _current_phase(self) -> _Phase:
        cycle = self.cycle
        if cycle is None:
            return ("headers", None)
        if cycle.more_body:
            return ("body", cycle)
        if not cycle.response_complete:
            return ("app", cycle)
        return ("headers", cycle)  # the next request's, after this cycle's response

    def _watch(self) -> None:
        phase = self._current_phase()
        if phase == self._phase:
            return
        self._disarm()
        self._phase = phase
        self._partial = False
        timeout = {"headers": self.header_timeout, "body": self.body_timeout}.get(phase[0])
        if timeout is not None and not self.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(timeout, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: _Phase) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._current_phase() != phase:
            return
        if self.transport.get_protocol() is not self:
            return  # upgraded (a WebSocket): no longer an HTTP request of ours
        kind, cycle = phase
        answered = kind == "body" and bool(getattr(cycle, "response_started", False))
        if kind == "body" or self._partial:
            what = "headers" if kind == "headers" else "body"
            limit = self.header_timeout if kind == "headers" else self.body_timeout
            # uvicorn's connection logger, as its protocol's own messages (shown by `serve`).
            logger: logging.Logger = getattr(self, "logger", log)
            logger.info(
                "closed a connection from %s: the request %s did not arrive within %g s",
                f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                what,
                limit,
            )
            if not answered:
                self.transport.write(_timeout_response(what, limit))
        self.transport.close()


def _timeout_response(what: str, limit: float) -> bytes:
    message = f"the request {what} did not arrive within {limit:g} seconds"
    body = json.dumps({"error": {"type": "request_timeout", "message": message}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def deadline_protocol(*, header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (httptools when installed, like uvicorn's "auto",
    else h11) with the deadlines above."""
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        base = H11Protocol
    else:  # pragma: no cover - httptools is optional
        base = HttpToolsProtocol
    return with_deadlines(base, header_timeout=header_timeout, body_timeout=body_timeout)


def with_deadlines(
    base: type[asyncio.Protocol], *, header_timeout: float, body_timeout: float
) -> type[asyncio.Protocol]:
    if not (header_timeout > 0 and body_timeout > 0):
        raise ValueError("the header and body timeouts must be positive")
    attributes = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    return type(f"Deadline{base.__name__}", (_RequestDeadlines, base), attributes)


def server_config(app: Starlette, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration to serve an app made by `create_app`, with the request
    deadlines of its `Limits` (header_timeout_seconds, body_timeout_seconds). `options`
    are uvicorn.Config's (host, port, log_level, ...)."""
    limits = app.state.api.limits
    protocol = deadline_protocol(
        header_timeout=limits.header_timeout_seconds, body_timeout=limits.body_timeout_seconds
    )
    return uvicorn.Config(app, http=protocol, **options)
