"""Error normalisation, Retry-After parsing and the SSE decoder, as pure functions."""

from __future__ import annotations

import email.utils
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrion.errors import (
    AuthenticationFailed,
    BadRequest,
    ContextLengthExceeded,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from orchestrion.models.http import (
    SSEDecoder,
    SSEEvent,
    error_from_status,
    error_from_stream,
    kept_headers,
    parse_retry_after,
    timeout_for,
)


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "junk", "retry-after": "3"}, 3.0),
        ({"retry-after": "-4"}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


@pytest.mark.parametrize(
    "status,cls",
    [
        (400, BadRequest),
        (404, BadRequest),
        (422, BadRequest),
        (401, AuthenticationFailed),
        (403, AuthenticationFailed),
        (408, ProviderUnavailable),
        (409, ProviderUnavailable),
        (429, RateLimited),
        (500, ProviderUnavailable),
        (502, ProviderUnavailable),
        (503, ProviderUnavailable),
        (529, ProviderUnavailable),
    ],
)
def test_status_codes_map_to_classes(status: int, cls: type[ProviderError]) -> None:
    error = error_from_status(status, "", {}, provider="p")
    assert type(error) is cls
    assert error.status_code == status
    assert error.retryable == (status in (408, 409, 429) or status >= 500)


@pytest.mark.parametrize(
    "body",
    [
        # OpenAI
        {
            "error": {
                "message": "This model's maximum context length is 128000 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            }
        },
        # Anthropic
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 210000 tokens > 200000 maximum",
            },
        },
        # vLLM-style flat body
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you "
            "requested 5000 tokens",
            "code": 400,
        },
    ],
)
def test_context_length_is_recognised_in_every_dialect(body: dict[str, object]) -> None:
    error = error_from_status(400, json.dumps(body), {}, provider="p")
    assert isinstance(error, ContextLengthExceeded)
    assert isinstance(error, BadRequest) and not error.retryable


def test_request_id_headers_and_body() -> None:
    headers = {
        "x-request-id": "req_1",
        "x-ratelimit-remaining-tokens": "0",
        "content-type": "application/json",
        "retry-after": "4",
    }
    error = error_from_status(429, "not json at all", headers, provider="openai")
    assert error.request_id == "req_1" and error.retry_after == 4.0
    assert error.message == "not json at all"
    assert error.headers == {
        "x-request-id": "req_1",
        "x-ratelimit-remaining-tokens": "0",
        "retry-after": "4",
    }
    body = json.dumps({"type": "error", "error": {"type": "api_error"}, "request_id": "r9"})
    assert error_from_status(500, body, {}, provider="a").request_id == "r9"
    assert error_from_status(500, "", {"request-id": "r2"}, provider="a").request_id == "r2"


def test_kept_headers_lowercases_and_filters() -> None:
    kept = kept_headers({"Anthropic-RateLimit-Tokens-Remaining": "5", "Server": "x"})
    assert kept == {"anthropic-ratelimit-tokens-remaining": "5"}


@pytest.mark.parametrize(
    "body,cls",
    [
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "x"}},
            ProviderUnavailable,
        ),
        ({"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}, RateLimited),
        ({"type": "error", "error": {"type": "invalid_request_error", "message": "x"}}, BadRequest),
        ({"error": {"message": "boom", "type": "server_error"}}, ProviderUnavailable),
        ({"error": {"message": "?", "type": "who_knows"}}, ProviderUnavailable),
        (
            {"error": {"message": "maximum context length is 8k", "code": None}},
            ContextLengthExceeded,
        ),
        ({"error": {"message": "slow", "type": "timeout_error"}}, ProviderTimeout),
    ],
)
def test_stream_error_objects(body: dict[str, object], cls: type[ProviderError]) -> None:
    assert type(error_from_stream(body, {}, provider="p")) is cls


def test_timeouts_are_clipped_to_the_deadline() -> None:
    import time

    base = httpx.Timeout(connect=10, read=120, write=30, pool=10)
    assert timeout_for(base, None) is base
    clipped = timeout_for(base, time.time() + 2)
    assert clipped.read is not None and clipped.read <= 2
    assert clipped.connect is not None and clipped.connect <= 2
    assert timeout_for(base, time.time() - 5).read == 0.001


# ---- SSE -------------------------------------------------------------------------------

names = st.one_of(st.none(), st.sampled_from(["message_start", "ping", "error", "x y"]))
line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)
events = st.lists(
    st.tuples(names, st.lists(line_text, min_size=1, max_size=3)), min_size=1, max_size=6
)


@given(
    events=events,
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    comments=st.booleans(),
)
def test_sse_decoder_is_independent_of_chunking(
    events: list[tuple[str | None, list[str]]], newline: str, cuts: list[int], comments: bool
) -> None:
    wire = ""
    for name, lines in events:
        if comments:
            wire += f": keep-alive{newline}"
        if name is not None:
            wire += f"event: {name}{newline}"
        wire += "".join(f"data: {line}{newline}" for line in lines)
        wire += newline
    decoder = SSEDecoder()
    got: list[SSEEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        got += decoder.feed(wire[start:cut])
        start = max(start, cut)
    got += decoder.feed(wire[start:])
    got += decoder.flush()
    assert got == [SSEEvent(name, "\n".join(lines)) for name, lines in events]


def test_sse_event_without_blank_line_is_dropped_at_the_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("data: a\n\ndata: half") == [SSEEvent(None, "a")]
    assert decoder.flush() == []
