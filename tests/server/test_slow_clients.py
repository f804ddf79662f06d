"""Slow clients against a real uvicorn on loopback, over raw sockets: connections that
dribble their headers or their body are closed after the configured deadlines (with a 408
when part of a request arrived), idle ones too, while normal requests and long streams go
on; a client that leaves in the middle of its body is not logged as an internal error.

Timing: the deadlines here are 1 s and 1.5 s, and the tests assert only that every slow
connection is closed eventually, within a bound far above them (a hang guard: before the
deadlines existed such connections stayed open for as long as the client liked)."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrion.server import Limits
from tests.server.helpers import (
    GATE,
    KEY_A,
    LiveServer,
    SSEReader,
    chat_agent,
    gate_agent,
    new_conversation,
    start_server,
    wait_for,
)

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
# Far above the deadlines: only a hang guard.
CLOSED_WITHIN = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    GATE.clear()
    live = start_server(
        tmp_path / "slow.db",
        [chat_agent(), gate_agent()],
        limits=Limits(
            header_timeout_seconds=HEADER_TIMEOUT,
            body_timeout_seconds=BODY_TIMEOUT,
            keepalive_seconds=0.2,
        ),
        default_agent="gate",
    )
    try:
        yield live
    finally:
        live.stop()


@dataclass
class Slow:
    """A raw connection that sends `first`, then one byte of `drip` at a time."""

    kind: str
    sock: socket.socket
    drip: bytes
    received: bytes = b""
    closed_after: float | None = None
    sent: int = 0
    opened: float = field(default_factory=time.monotonic)


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    return sock


def request_head(method: str, path: str, length: int | None = None, pad: int = 0) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY_A}\r\n"
    if pad:
        head += f"X-Pad: {'p' * pad}\r\n"
    if length is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return (head + "\r\n").encode()


def dribble_until_closed(slow: list[Slow], *, pause: float = 0.1) -> None:
    """Send each open connection one more byte every `pause` seconds, read what the server
    answers, until the server closed every connection (or the hang guard fires)."""
    deadline = time.monotonic() + CLOSED_WITHIN
    while any(s.closed_after is None for s in slow):
        assert time.monotonic() < deadline, (
            f"{sum(s.closed_after is None for s in slow)} slow connections are still open "
            f"after {CLOSED_WITHIN} s: {sorted({s.kind for s in slow if s.closed_after is None})}"
        )
        open_ = [s for s in slow if s.closed_after is None]
        readable, _, _ = select.select([s.sock for s in open_], [], [], pause)
        for s in open_:
            if s.sock in readable:
                try:
                    chunk = s.sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    s.received += chunk
                    continue
                s.closed_after = time.monotonic() - s.opened
                s.sock.close()
            elif s.sent < len(s.drip) and not s.received:
                try:
                    s.sock.send(s.drip[s.sent : s.sent + 1])
                    s.sent += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed by the server: the next select sees it


def test_sixty_slow_connections_are_closed_after_their_deadlines_while_others_are_served(
    server: LiveServer,
) -> None:
    body = b'{"message": "' + b"x" * 600 + b'"}'
    conversation = new_conversation(server.client())
    slow: list[Slow] = []
    for i in range(60):
        sock = connect(server)
        kind = ("idle", "headers", "body", "unread body")[i % 4]
        if kind == "idle":
            drip = b""  # connects and sends nothing
        elif kind == "headers":
            # The headers, a byte at a time (they would take a minute to arrive).
            drip = request_head("GET", "/health", pad=600)
        elif kind == "body":
            sock.send(request_head("POST", f"/v1/conversations/{conversation}/messages", len(body)))
            drip = body
        else:  # a body the endpoint never reads (GET): only the server can time it out
            sock.send(request_head("GET", "/health", 5000))
            drip = b"y" * 5000
        slow.append(Slow(kind, sock, drip))

    # Meanwhile the service answers as usual.
    client = server.client()
    for _ in range(5):
        assert client.get("/health").status_code == 200

    dribble_until_closed(slow)

    for s in slow:
        assert s.closed_after is not None
        if s.kind == "idle":
            assert s.received == b""  # nothing to answer: closed like an idle keep-alive
        elif s.kind == "unread body":
            # /health answered at once; the connection is closed when the body is late.
            assert s.received.startswith(b"HTTP/1.1 200"), s.received[:200]
        else:
            assert s.received.startswith(b"HTTP/1.1 408"), (s.kind, s.received[:200])
            assert b'"request_timeout"' in s.received
            what = b"headers" if s.kind == "headers" else b"body"
            assert b"the request " + what in s.received
    # Still serving after all that.
    assert client.get("/health").json() == {"status": "ok"}


def test_a_body_sent_in_pieces_within_the_deadline_is_accepted(server: LiveServer) -> None:
    conversation = new_conversation(server.client())
    body = b'{"message": "hello in pieces", "stream": false}'
    sock = connect(server)
    sock.setblocking(True)
    sock.send(request_head("POST", f"/v1/conversations/{conversation}/messages", len(body)))
    for piece in (body[:10], body[10:30], body[30:]):
        time.sleep(0.1)
        sock.send(piece)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]


def test_deadlines_do_not_cut_a_long_stream_or_a_kept_alive_connection(
    server: LiveServer,
) -> None:
    client = server.client()
    conversation = new_conversation(client, "gate")
    started = time.monotonic()
    with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"message": "block me"}
    ) as response:
        assert response.status_code == 200
        events = []
        for event in SSEReader(response):
            events.append(event)
            if event.event == "tool.started" or len(events) == 3:
                # Keep the stream open well past both deadlines, then let the turn end.
                time.sleep(HEADER_TIMEOUT + BODY_TIMEOUT + 0.5)
                GATE.set()
            if event.event == "run.finished":
                break
    assert events[-1].event == "run.finished"
    assert events[-1].data["attributes"]["run.status"] == "succeeded"
    assert time.monotonic() - started > HEADER_TIMEOUT + BODY_TIMEOUT
    # The same kept-alive connection serves the next request.
    assert client.get(f"/v1/conversations/{conversation}").status_code == 200


@contextmanager
def records(*names: str) -> Iterator[list[logging.LogRecord]]:
    """Log records of these loggers (uvicorn's do not propagate to the root logger)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def test_a_client_that_leaves_in_the_middle_of_its_body_is_not_an_internal_error(
    server: LiveServer,
) -> None:
    client = server.client()
    conversation = new_conversation(client)
    with records("orchestrion.server", "uvicorn.error", "uvicorn") as seen:
        for path in ("/v1/conversations", f"/v1/conversations/{conversation}/messages"):
            sock = connect(server)
            sock.setblocking(True)
            sock.send(request_head("POST", path, 200) + b'{"message": "cut')
            time.sleep(0.2)
            sock.close()
        # The server noticed both (one line each), and keeps serving.
        wait_for(
            lambda: sum("went away" in r.getMessage() for r in seen) == 2,
            what="both disconnects are logged",
        )
        assert client.get("/health").status_code == 200
    assert [r for r in seen if r.levelno >= logging.WARNING] == []
    assert all(r.exc_info is None for r in seen)
    assert client.get(f"/v1/conversations/{conversation}").json()["runs"] == []


def test_timeouts_must_be_positive() -> None:
    from orchestrion.server.deadlines import deadline_protocol

    with pytest.raises(ValueError, match="positive"):
        deadline_protocol(header_timeout=0, body_timeout=1)


def test_serve_applies_its_header_and_body_timeouts(tmp_path: Path) -> None:
    from tests.server.test_serve_cli import ENV_KEY, serve, stop, up

    proc, url = serve(
        tmp_path, "--header-timeout", "0.5", "--body-timeout", "0.7", env_keys=f"{ENV_KEY}=t"
    )
    try:
        up(proc, url)
        host, port = url.removeprefix("http://").split(":")
        slow = []
        body_head = request_head("POST", "/v1/conversations", 90).replace(
            KEY_A.encode(), ENV_KEY.encode()
        )
        for first in (b"GET /health HTTP/1.1\r\nHost: x\r\n", body_head + b'{"ag'):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.send(first)  # then nothing more
            sock.setblocking(False)
            slow.append(Slow("cli", sock, b""))
        dribble_until_closed(slow)
        assert [s.received[:12] for s in slow] == [b"HTTP/1.1 408"] * 2
        assert b"0.5 seconds" in slow[0].received and b"0.7 seconds" in slow[1].received
    finally:
        _, output = stop(proc)
    assert "did not arrive within 0.5 s" in output and "did not arrive within 0.7 s" in output
