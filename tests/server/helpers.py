"""A real uvicorn server on a loopback port, in a thread of the test process, and a small
SSE reader over httpx (no HTTP mocks anywhere)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from orchestrion import Agent, Orchestrion, ScriptedModel, call, say, tool
from orchestrion.models.messages import ModelRequest
from orchestrion.models.scripted import ScriptedReply, turn_position
from orchestrion.observe.events import new_id
from orchestrion.server import Limits, create_app, server_config
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, RunCompletion

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
    url = f"sqlite:///{store}" if isinstance(store, Path) else store
    orx = Orchestrion(url, agents=agents)
    limits = limits or Limits()
    app = create_app(orx, keys=KEYS, limits=limits, default_agent=default_agent)
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
    return LiveServer(f"http://127.0.0.1:{port}", server, thread, url, limits)


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

SEED_TEXT = "All good: your appointment is moved to Friday at 10:00. " * 8  # ~450 chars


def turn_events(run_id: str, turn: int) -> list[EventRecord]:
    """The events of one turn as the engine records them (a model call that calls a
    tool, the tool, a model call that answers in ten text chunks): ~10 KB of JSON."""
    root = f"{turn:08x}00000000"
    t = 1_700_000_000.0 + turn * 10

    def ev(seq: int, type: str, name: str, span: str, parent: str | None, **kw: Any) -> EventRecord:
        end = kw.pop("end", t + seq * 0.01)
        attributes = kw.pop("attributes", {})
        return EventRecord(
            run_id=run_id,
            seq=seq,
            type=type,
            name=name,
            trace_id=f"{turn:032x}",
            span_id=span,
            parent_span_id=parent,
            start=t + seq * 0.01,
            end=end,
            attributes=attributes,
            **kw,
        )

    chat1, tool, chat2 = (f"{turn:08x}{n:08x}" for n in (1, 2, 3))
    events = [
        ev(2, "run.started", "invoke_agent chat", root, None, end=None),
        ev(3, "step.started", "chat scripted", chat1, root, end=None),
        ev(
            4,
            "model.response",
            "chat scripted",
            f"{chat1}r",
            chat1,
            attributes={"tool_calls": ["lookup"], "preview": SEED_TEXT},
        ),
        ev(5, "step.finished", "chat scripted", chat1, root, status="ok"),
        ev(6, "step.started", "execute_tool lookup", tool, root, end=None),
        ev(
            7,
            "tool.result",
            "execute_tool lookup",
            f"{tool}r",
            tool,
            attributes={"result": SEED_TEXT * 3, "is_error": False},
        ),
        ev(8, "step.finished", "execute_tool lookup", tool, root, status="ok"),
        ev(9, "step.started", "chat scripted", chat2, root, end=None),
    ]
    events += [
        ev(10 + i, "text.delta", "text", f"{chat2}{i:02x}", chat2, attributes={"text": SEED_TEXT})
        for i in range(10)
    ]
    events += [
        ev(20, "step.finished", "chat scripted", chat2, root, status="ok"),
        ev(
            21,
            "run.finished",
            "invoke_agent chat",
            root,
            None,
            status="ok",
            attributes={"run.status": "succeeded", "answer": SEED_TEXT},
        ),
    ]
    return events


def seed_conversation(
    store_url: str, *, turns: int, tenant: str = "tenant-a", agent: str = "chat"
) -> tuple[str, list[str]]:
    """A conversation of `turns` finished turns (2 messages each, ~10 KB of events each),
    written through the store API as the engine would: (conversation id, run ids)."""

    async def seed() -> tuple[str, list[str]]:
        cid = new_id("conv")
        run_ids: list[str] = []
        async with open_store(store_url) as store:
            await store.ensure_conversation(
                cid, tenant=tenant, agent=agent, ttl_seconds=1e9, state="AWAITING_INPUT"
            )
            for turn in range(turns):
                run_id = new_id("run")
                queued = EventRecord(
                    run_id,
                    1,
                    "run.queued",
                    "queued",
                    f"{turn:032x}",
                    f"{turn:08x}ffffffff",
                    f"{turn:08x}00000000",
                    1_700_000_000.0 + turn * 10,
                )
                await store.create_run(
                    run_id=run_id,
                    conversation_id=cid,
                    tenant=tenant,
                    agent=agent,
                    input={"message": f"question {turn}"},
                    trace_id=f"{turn:032x}",
                    deadline_at=None,
                    busy_policy="enqueue",
                    event=queued,
                )
                lease = await store.claim(
                    run_id, owner="seed", expected_epoch=0, lease_seconds=60, now=time.time()
                )
                assert lease is not None
                messages = [
                    {"role": "user", "content": f"question {turn}"},
                    {"role": "assistant", "content": f"answer {turn}: {SEED_TEXT[:60]}"},
                ]
                await store.complete_run(
                    lease,
                    RunCompletion(
                        "succeeded",
                        {"answer": messages[1]["content"]},
                        None,
                        messages,
                        "AWAITING_INPUT",
                        turn_events(run_id, turn),
                    ),
                    now=time.time(),
                )
                run_ids.append(run_id)
        return cid, run_ids

    return asyncio.run(seed())
