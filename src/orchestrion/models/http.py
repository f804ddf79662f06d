"""What the HTTP provider adapters share: client set-up, deadlines, SSE parsing, errors.

Why httpx directly rather than the official SDKs: orchestrion's resilience layer must be
the only retry owner (SDKs retry by default and hide Retry-After from callers), the
adapters need every response header (request ids, rate-limit state) on success and on
failure, and they must parse the SSE stream themselves to tell a cut stream from a
finished one. httpx is already a dependency; the SDKs then stay test-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from orchestrion.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextLengthExceeded,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from orchestrion.resilience.retry_after import retry_after_from_headers

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=30.0, pool=10.0)

# Headers worth keeping on an error: what a retry policy or an operator wants to see.
_KEPT_HEADER_PREFIXES = (
    "x-ratelimit-",
    "anthropic-ratelimit-",
    "ratelimit-",
    "retry-after",
    "x-request-id",
    "request-id",
    "openai-processing-ms",
    "x-should-retry",
)

# Phrases providers use when the prompt does not fit (OpenAI, Anthropic, vLLM, llama.cpp,
# Ollama, LiteLLM all word it differently; the code field is not always present).
_CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "exceeds the context",
    "exceed context limit",
    "too many tokens",
    "input is too long",
)


# ---- headers -----------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms` (preferred) or `retry-after` (seconds or an
    HTTP date); the one parser lives in the resilience layer that acts on it."""
    lower = {k.lower(): v for k, v in headers.items()}
    return retry_after_from_headers(lower, now=time.time() if now is None else now)


def request_id_from(headers: Mapping[str, str]) -> str | None:
    lower = {k.lower(): v for k, v in headers.items()}
    return lower.get("x-request-id") or lower.get("request-id") or None


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit, retry and request-id headers of a response (lower-cased names)."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(_KEPT_HEADER_PREFIXES)}


# ---- errors ------------------------------------------------------------------------------


def looks_like_context_length(*texts: str | None) -> bool:
    joined = " ".join(t for t in texts if t).lower()
    return any(marker in joined for marker in _CONTEXT_LENGTH_MARKERS)


def error_details(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error body in either provider's shape (OpenAI:
    {"error": {...}}, Anthropic: {"type": "error", "error": {...}}, vLLM: {"object":
    "error", "message": ...}, or a bare string)."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner, None, None
        if isinstance(inner, Mapping):
            message = inner.get("message")
            etype = inner.get("type")
            code = inner.get("code")
            return (
                str(message) if message is not None else None,
                str(etype) if etype is not None else None,
                str(code) if code is not None else None,
            )
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], None, None
    return None, None, None


def error_from_status(
    status: int,
    body_text: str,
    headers: Mapping[str, str],
    *,
    provider: str,
) -> ProviderError:
    """Turn a non-2xx response into orchestrion's error class for it."""
    try:
        body: Any = json.loads(body_text) if body_text.strip() else None
    except ValueError:
        body = body_text
    message, etype, code = error_details(body)
    text = message or f"HTTP {status}"
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "retry_after": parse_retry_after(headers),
        "request_id": request_id_from(headers)
        or (body.get("request_id") if isinstance(body, Mapping) else None),
        "error_type": etype or code,
        "headers": kept_headers(headers),
    }
    if status in (400, 413, 422) and looks_like_context_length(message, etype, code):
        return ContextLengthExceeded(text, **kwargs)
    if status == 429:
        return RateLimited(text, **kwargs)
    if status in (401, 403):
        return AuthenticationFailed(text, **kwargs)
    if status in (408, 409) or status >= 500:
        return ProviderUnavailable(text, **kwargs)
    return BadRequest(text, **kwargs)


# Error "type"/"code" values seen inside a 200 stream, mapped to the class a status code
# would have given. Unknown types inside a stream are the server failing: retryable.
_STREAM_ERROR_CLASSES: dict[str, type[ProviderError]] = {
    "overloaded_error": ProviderUnavailable,
    "api_error": ProviderUnavailable,
    "server_error": ProviderUnavailable,
    "internal_server_error": ProviderUnavailable,
    "service_unavailable": ProviderUnavailable,
    "timeout_error": ProviderTimeout,
    "rate_limit_error": RateLimited,
    "rate_limit_exceeded": RateLimited,
    "insufficient_quota": RateLimited,
    "invalid_request_error": BadRequest,
    "not_found_error": BadRequest,
    "request_too_large": BadRequest,
    "authentication_error": AuthenticationFailed,
    "permission_error": AuthenticationFailed,
}

_STREAM_ERROR_STATUS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "server_error": 500,
}


def error_from_stream(body: Any, headers: Mapping[str, str], *, provider: str) -> ProviderError:
    """An error object that arrived inside a stream after HTTP 200."""
    message, etype, code = error_details(body)
    text = message or "error event in stream"
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status_code": _STREAM_ERROR_STATUS.get(etype or ""),
        "request_id": request_id_from(headers),
        "error_type": etype or code,
        "headers": kept_headers(headers),
    }
    if looks_like_context_length(message, etype, code):
        return ContextLengthExceeded(text, **kwargs)
    for key in (etype, code):
        if key and key in _STREAM_ERROR_CLASSES:
            return _STREAM_ERROR_CLASSES[key](text, **kwargs)
    if code and code.isdigit():
        status = int(code)
        kwargs["status_code"] = status
        if status < 500 and status != 429:
            return error_from_status(status, json.dumps(body), headers, provider=provider)
    return ProviderUnavailable(text, **kwargs)


def error_from_transport(exc: BaseException, *, provider: str) -> ProviderError:
    """httpx's exceptions (and deadline expiry) mapped to orchestrion's classes."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        detail = str(exc) or (
            "deadline passed" if isinstance(exc, TimeoutError) else type(exc).__name__
        )
        return ProviderTimeout(f"timed out: {detail}", provider=provider)
    if isinstance(exc, httpx.DecodingError):
        return MalformedResponse(f"undecodable body: {exc}", provider=provider)
    # RemoteProtocolError (peer closed mid-body), ConnectError, ReadError, ...
    detail = str(exc) or "connection closed or reset by the peer"
    return ProviderConnectionError(f"{type(exc).__name__}: {detail}", provider=provider)


# ---- deadlines ---------------------------------------------------------------------------


def remaining(deadline: float | None) -> float | None:
    """Seconds left until an absolute `time.time()` deadline (None: no deadline)."""
    return None if deadline is None else deadline - time.time()


def timeout_for(base: httpx.Timeout, deadline: float | None) -> httpx.Timeout:
    """Each httpx phase timeout, clipped so none can outlive the deadline."""
    left = remaining(deadline)
    if left is None:
        return base
    left = max(left, 0.001)

    def clip(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(
        connect=clip(base.connect),
        read=clip(base.read),
        write=clip(base.write),
        pool=clip(base.pool),
    )


# ---- SSE ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Incremental Server-Sent Events parser (the WHATWG rules providers rely on): `data`
    lines join with newlines, `:` lines are comments, a blank line dispatches, and any of
    CRLF / LF / CR ends a line. Fed raw text chunks in whatever pieces the network gives."""

    def __init__(self) -> None:
        self._buffer = ""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: str, *, final: bool = False) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, sep_len = cut
            # A lone CR at the very end may be the first half of CRLF: wait for more.
            if not final and self._buffer[line] == "\r" and line + 1 == len(self._buffer):
                break
            text = self._buffer[:line]
            self._buffer = self._buffer[line + sep_len :]
            event = self._line(text)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: pending complete lines are processed; a last line without a
        newline still counts, but an event not closed by a blank line is dropped, as the
        SSE spec says."""
        events = self.feed("", final=True)
        if self._buffer:
            self._line(self._buffer)
        self._buffer, self._event, self._data = "", None, []
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data and self._event is None:
                return None
            event = SSEEvent(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


def _line_end(buffer: str) -> tuple[int, int] | None:
    n = buffer.find("\n")
    r = buffer.find("\r")
    if r == -1 and n == -1:
        return None
    if r == -1 or (n != -1 and n < r):
        return n, 1
    if r + 1 < len(buffer) and buffer[r + 1] == "\n":
        return r, 2
    return r, 1


# ---- the request itself ----------------------------------------------------------------


class HTTPSession:
    """One provider endpoint: a shared httpx.AsyncClient (created lazily, so a model can be
    built outside an event loop) with transport retries off and deadlines applied."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        timeout: httpx.Timeout | float | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        if timeout is None:
            self.timeout = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            self.timeout = timeout
        else:
            self.timeout = httpx.Timeout(timeout)
        self._client = client
        self._owns_client = client is None
        self._transport = transport

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                # retries=0 on the transport: connection attempts are not retried either.
                transport=self._transport or httpx.AsyncHTTPTransport(retries=0),
                timeout=self.timeout,
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client this session made (a client given to it is its owner's to
        close). Idempotent; the next request makes a new client."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._owns_client:
            await client.aclose()
        else:
            self._client = client  # not ours: keep using it

    @asynccontextmanager
    async def post_stream(
        self, path: str, payload: Mapping[str, Any], deadline: float | None
    ) -> AsyncIterator[httpx.Response]:
        """POST and yield the open response once its status is 2xx; any other status is
        raised as the normalised error, and transport failures likewise."""
        left = remaining(deadline)
        if left is not None and left <= 0:
            raise ProviderTimeout("deadline already passed", provider=self.provider)
        client = self.client()
        request = client.build_request(
            "POST",
            f"{self.base_url}{path}",
            json=payload,
            headers=self.headers,
            timeout=timeout_for(self.timeout, deadline),
        )
        try:
            async with asyncio.timeout(remaining(deadline)):
                response = await client.send(request, stream=True)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise error_from_transport(exc, provider=self.provider) from exc
        try:
            if response.status_code >= 300:
                try:
                    async with asyncio.timeout(remaining(deadline)):
                        body = (await response.aread()).decode("utf-8", "replace")
                except (httpx.HTTPError, TimeoutError):
                    body = ""
                raise error_from_status(
                    response.status_code, body, response.headers, provider=self.provider
                )
            yield response
        finally:
            await response.aclose()

    async def iter_text(
        self, response: httpx.Response, deadline: float | None
    ) -> AsyncIterator[str]:
        """The body as text chunks; the deadline bounds the whole read, not each chunk."""
        chunks = response.aiter_text()
        while True:
            try:
                async with asyncio.timeout(remaining(deadline)):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except (httpx.HTTPError, TimeoutError) as exc:
                raise error_from_transport(exc, provider=self.provider) from exc
            yield chunk

    async def iter_sse(
        self, response: httpx.Response, deadline: float | None
    ) -> AsyncIterator[SSEEvent]:
        decoder = SSEDecoder()
        async for chunk in self.iter_text(response, deadline):
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.flush():
            yield event

    async def drain(self, events: AsyncIterator[SSEEvent], deadline: float | None) -> None:
        """Read what follows the protocol's last event (normally just the end of the
        chunked body) so the connection goes back to the pool instead of being closed:
        against a real provider that saves a TLS handshake per call. Bounded and silent:
        the answer is already complete."""
        left = remaining(deadline)
        limit = 1.0 if left is None else max(0.0, min(1.0, left))
        with contextlib.suppress(ProviderError, TimeoutError):
            async with asyncio.timeout(limit):
                async for _ in events:
                    pass

    async def read_json(self, response: httpx.Response, deadline: float | None) -> Any:
        """A whole JSON body (servers that ignore `stream: true`); bad JSON is malformed."""
        text = "".join([c async for c in self.iter_text(response, deadline)])
        if not text.strip():
            raise MalformedResponse(
                "empty response body",
                provider=self.provider,
                status_code=response.status_code,
                request_id=request_id_from(response.headers),
            )
        try:
            return json.loads(text)
        except ValueError as exc:
            raise MalformedResponse(
                f"response body is not JSON: {text[:80]!r}",
                provider=self.provider,
                status_code=response.status_code,
                request_id=request_id_from(response.headers),
            ) from exc


def is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def parse_json_event(data: str, response: httpx.Response, *, provider: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise MalformedResponse(
            f"stream event is not JSON: {data[:80]!r}",
            provider=provider,
            status_code=response.status_code,
            request_id=request_id_from(response.headers),
        ) from exc


def cut_stream(response: httpx.Response, *, provider: str, what: str) -> MalformedResponse:
    return MalformedResponse(
        f"stream ended before {what}",
        provider=provider,
        status_code=response.status_code,
        request_id=request_id_from(response.headers),
    )
