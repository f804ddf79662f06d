"""A real uvicorn server on a loopback port, in a thread of the test process, and a small
SSE reader over httpx (no HTTP mocks anywhere)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from orchestrion import Agent, Orchestrion, ScriptedModel, call, say, tool
from orchestrion.models.messages import ModelRequest
from orchestrion.models.scripted import ScriptedReply, turn_position
from orchestrion.server import Limits, create_app, server_config

KEY_A = "test-key-tenant-a-0123456789"
KEY_B = "test-key-tenant-b-9876543210"
KEYS = {KEY_A: "tenant-a", KEY_B: "tenant-b"}
LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 4

# The test releases a turn blocked in the `gate` tool by setting this (same process).
GATE = threading.Event()
GATE_STARTED = threading.Event()


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_agent() -> Agent:
    """Streams LONG_TEXT slowly: many coalesced text chunks."""
    return Agent(
        "chat",
        model=ScriptedModel([say(LONG_TEXT)], latency=0.2, chunk_size=3, chunk_delay=0.01),
    )


def gate_agent() -> Agent:
    """A message starting with "block" calls a tool that waits for GATE (or a cancel);
    anything else is echoed at once."""

    @tool(timeout=None, retry=None)
    async def gate() -> str:
        """Wait for the test."""
        GATE_STARTED.set()
        while not GATE.is_set():  # noqa: ASYNC110 (a threading.Event set by the test)
            await asyncio.sleep(0.01)
        return "opened"

    def script(request: ModelRequest) -> ScriptedReply:
        user = next(m.content or "" for m in reversed(request.messages) if m.role == "user")
        if user.startswith("block") and turn_position(request) == 0:
            return call("gate", "Waiting.")
        return say(f"echo: {user}")

    return Agent("gate", model=ScriptedModel(script), tools=[gate])


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    store: str  # the store's URL
    limits: Limits
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = KEY_A, **kwargs: Any) -> httpx.Client:
        headers = auth(key) if key else {}
        c = httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        GATE.set()  # nothing may stay blocked: shutdown waits for turns in flight
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "the server did not stop"


def start_server(
    store: Path | str,
    agents: list[Agent],
    *,
    limits: Limits | None = None,
    default_agent: str | None = None,
) -> LiveServer:
    """`store`: a SQLite file's path, or a store URL."""
    limits = limits or Limits()
    return start_app(
        store,
        lambda orx: create_app(orx, keys=KEYS, limits=limits, default_agent=default_agent),
        agents,
    )


def start_app(
    store: Path | str, make_app: Callable[[Orchestrion], Starlette], agents: list[Agent]
) -> LiveServer:
    """The app `make_app` builds around an Orchestrion of `agents` on `store`, served by
    uvicorn on a loopback port in a thread."""
    url = f"sqlite:///{store}" if isinstance(store, Path) else store
    app = make_app(Orchestrion(url, agents=agents))
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(
        app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server died on startup"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", server, thread, url, app.state.api.limits)


@dataclass
class SSEEvent:
    id: int | None
    event: str
    data: dict[str, Any]


@dataclass
class SSEReader:
    """Parses a text/event-stream response line by line (as an EventSource does)."""

    response: httpx.Response
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    def __iter__(self) -> Iterator[SSEEvent]:
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in self.response.iter_lines():
            if line == "":
                if data or fields:
                    yield SSEEvent(
                        id=int(fields["id"]) if "id" in fields else None,
                        event=fields.get("event", "message"),
                        data=json.loads("\n".join(data)) if data else {},
                    )
                fields, data = {}, []
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value


def text_of(events: list[SSEEvent]) -> str:
    """The streamed text, honouring text.reset."""
    parts: dict[str, list[str]] = {}
    for e in events:
        if e.event == "text.delta":
            parts.setdefault(e.data["parent_span_id"], []).append(e.data["attributes"]["text"])
        elif e.event == "text.reset":
            parts[e.data["parent_span_id"]] = []
    return "".join("".join(p) for p in parts.values())


def wait_for(predicate: Any, *, what: str, attempts: int = 1000, pause: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy (bounded by attempts, not asserted on time)."""
    for _ in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"never happened: {what}")


def new_conversation(client: httpx.Client, agent: str | None = None) -> str:
    r = client.post("/v1/conversations", json={"agent": agent} if agent else None)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def finished_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/runs/{run_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(done, what=f"run {run_id} ends")
    return result


# ---- long conversations, written directly through the store (fast) ----------------------


def _bench_reads() -> Any:
    """bench/reads.py, whose `seed_conversation` writes long conversations as the engine
    would (one source for the benchmark and the tests)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "reads.py"
    spec = importlib.util.spec_from_file_location("orchestrion_bench_reads", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_conversation(
    store_url: str, *, turns: int, tenant: str = "tenant-a", agent: str = "chat"
) -> tuple[str, list[str]]:
    """A conversation of `turns` finished turns (2 messages and 21 events, ~10 KB, each),
    written through the store API: (conversation id, run ids, oldest first)."""
    result: tuple[str, list[str]] = _bench_reads().seed_conversation(
        store_url, turns=turns, tenant=tenant, agent=agent
    )
    return result


async def seed(
    store_url: str, *, turns: int, tenant: str = "tenant-a", agent: str = "chat"
) -> tuple[str, list[str]]:
    """`seed_conversation`, for async tests."""
    result: tuple[str, list[str]] = await _bench_reads().seed(
        store_url, turns=turns, tenant=tenant, agent=agent
    )
    return result
