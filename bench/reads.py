"""Reading a long conversation through the service, and /health meanwhile.

A conversation of 2,000 turns (two messages and ~10 KB of events each: 20 MB of trace) is
written through the store API, as the engine writes it. Then five clients read it whole
over loopback HTTP, page by page at the largest page sizes (its trace, then its history),
while another client polls /health. Reported: /health latency with nothing else going on
(the baseline) and during the reads, next to the latency of a page; pages per second;
the largest page. The tests reuse `seed_conversation` (tests/server/helpers.py).

The store is a temporary SQLite file, or `--store URL` (a PostgreSQL schema, say).
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from orchestrion import Agent, Orchestrion, ScriptedModel, say
from orchestrion.observe.events import new_id
from orchestrion.server import Limits, create_app, server_config
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, RunCompletion

KEY = "bench-key-0123456789abcdef"
TENANT = "bench"
SEED_TEXT = "All good: your appointment is moved to Friday at 10:00. " * 8  # ~450 chars


def turn_events(run_id: str, turn: int) -> list[EventRecord]:
    """The events of one turn as the engine records them (a model call that calls a
    tool, the tool, a model call that answers in ten text chunks): ~10 KB of JSON."""
    root = f"{turn:08x}00000000"
    t = 1_700_000_000.0 + turn * 10
    chat1, tool, chat2 = (f"{turn:08x}{n:08x}" for n in (1, 2, 3))

    def ev(seq: int, type: str, name: str, span: str, parent: str | None, **kw: str) -> EventRecord:
        return EventRecord(
            run_id=run_id,
            seq=seq,
            type=type,
            name=name,
            trace_id=f"{turn:032x}",
            span_id=span,
            parent_span_id=parent,
            start=t + seq * 0.01,
            end=None if type.endswith(".started") else t + seq * 0.01,
            status="ok" if type.endswith(".finished") else None,
            attributes=kw,
        )

    events = [
        ev(2, "run.started", "invoke_agent chat", root, None),
        ev(3, "step.started", "chat scripted", chat1, root),
        ev(4, "model.response", "chat scripted", f"{chat1}r", chat1, preview=SEED_TEXT),
        ev(5, "step.finished", "chat scripted", chat1, root),
        ev(6, "step.started", "execute_tool lookup", tool, root),
        ev(7, "tool.result", "execute_tool lookup", f"{tool}r", tool, result=SEED_TEXT * 3),
        ev(8, "step.finished", "execute_tool lookup", tool, root),
        ev(9, "step.started", "chat scripted", chat2, root),
        *(
            ev(10 + i, "text.delta", "text", f"{chat2}{i:02x}", chat2, text=SEED_TEXT)
            for i in range(10)
        ),
        ev(20, "step.finished", "chat scripted", chat2, root),
        ev(21, "run.finished", "invoke_agent chat", root, None, answer=SEED_TEXT),
    ]
    events[-1].attributes["run.status"] = "succeeded"
    return events


async def seed(store_url: str, *, turns: int, tenant: str, agent: str) -> tuple[str, list[str]]:
    """A conversation of `turns` finished turns, written through the store API as the
    engine would (queue, claim, complete): (conversation id, run ids, oldest first)."""
    cid = new_id("conv")
    run_ids: list[str] = []
    async with open_store(store_url) as store:
        await store.ensure_conversation(
            cid, tenant=tenant, agent=agent, ttl_seconds=1e9, state="AWAITING_INPUT"
        )
        for turn in range(turns):
            run_id = new_id("run")
            trace_id, root = f"{turn:032x}", f"{turn:08x}00000000"
            queued = EventRecord(
                run_id, 1, "run.queued", "queued", trace_id, f"{turn:08x}ffffffff", root, 0.0
            )
            await store.create_run(
                run_id=run_id,
                conversation_id=cid,
                tenant=tenant,
                agent=agent,
                input={"message": f"question {turn}"},
                trace_id=trace_id,
                deadline_at=None,
                busy_policy="enqueue",
                event=queued,
            )
            lease = await store.claim(
                run_id, owner="seed", expected_epoch=0, lease_seconds=60, now=time.time()
            )
            assert lease is not None
            answer = f"answer {turn}: {SEED_TEXT[:60]}"
            messages = [
                {"role": "user", "content": f"question {turn}"},
                {"role": "assistant", "content": answer},
            ]
            completion = RunCompletion(
                "succeeded",
                {"answer": answer},
                None,
                messages,
                "AWAITING_INPUT",
                turn_events(run_id, turn),
            )
            await store.complete_run(lease, completion, now=time.time())
            run_ids.append(run_id)
    return cid, run_ids


def seed_conversation(
    store_url: str, *, turns: int, tenant: str = TENANT, agent: str = "chat"
) -> tuple[str, list[str]]:
    return asyncio.run(seed(store_url, turns=turns, tenant=tenant, agent=agent))


def _serve(store_url: str) -> tuple[uvicorn.Server, threading.Thread, str, Limits]:
    orx = Orchestrion(store_url, agents=[Agent("chat", model=ScriptedModel([say("hi")]))])
    limits = Limits()
    app = create_app(orx, keys={KEY: TENANT}, limits=limits)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}", limits


def _health(client: httpx.Client, samples: list[float]) -> None:
    sent = time.perf_counter()
    client.get("/health").raise_for_status()
    samples.append(time.perf_counter() - sent)


def _ms(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000, ordered[-1] * 1000


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    turns, readers = (200, 2) if quick else (2000, 5)
    with tempfile.TemporaryDirectory() as folder:
        store_url = store or f"sqlite:///{Path(folder) / 'reads.db'}"
        started = time.perf_counter()
        conversation, _ = seed_conversation(store_url, turns=turns)
        seeded = time.perf_counter() - started
        server, thread, url, limits = _serve(store_url)
        try:
            idle: list[float] = []
            busy: list[float] = []
            pages: list[float] = []
            largest = [0]
            with httpx.Client(base_url=url, timeout=120) as probe:
                for _ in range(50):
                    _health(probe, idle)

                def read() -> None:
                    headers = {"Authorization": f"Bearer {KEY}"}
                    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
                        trace = f"/v1/conversations/{conversation}/trace"
                        history = f"/v1/conversations/{conversation}"
                        for first in (
                            f"{trace}?limit={limits.max_page_runs}",
                            f"{history}?limit={limits.max_page_messages}",
                        ):
                            next_url: str | None = first
                            while next_url:
                                sent = time.perf_counter()
                                response = c.get(next_url)
                                response.raise_for_status()
                                pages.append(time.perf_counter() - sent)
                                largest[0] = max(largest[0], len(response.content))
                                next_url = response.json()["next"]

                threads = [threading.Thread(target=read) for _ in range(readers)]
                reading = time.perf_counter()
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    _health(probe, busy)
                    time.sleep(0.01)
                for t in threads:
                    t.join()
                reading = time.perf_counter() - reading
        finally:
            server.should_exit = True
            thread.join(60)
    idle_ms, busy_ms, page_ms = _ms(idle), _ms(busy), _ms(pages)
    lines = [
        f"a conversation of {turns} turns, seeded through the store in {seeded:.1f} s; "
        f"{readers} clients read it whole, page by page ({len(pages)} pages, largest "
        f"{largest[0] / 1e6:.2f} MB) in {reading:.2f} s ({len(pages) / reading:.0f} pages/s)",
        "latency, ms (median / p99 / max):",
        f"  /health, nothing else going on          {idle_ms[0]:7.2f} / {idle_ms[1]:7.2f} / "
        f"{idle_ms[2]:7.2f}",
        f"  /health, while the clients read         {busy_ms[0]:7.2f} / {busy_ms[1]:7.2f} / "
        f"{busy_ms[2]:7.2f}",
        f"  a page of the reads                     {page_ms[0]:7.2f} / {page_ms[1]:7.2f} / "
        f"{page_ms[2]:7.2f}",
        f"/health during the reads: median {busy_ms[0] / page_ms[0]:.3f}x a page's, "
        f"slowest {busy_ms[2] / 1000 / reading:.3f}x the whole read",
    ]
    return {
        "lines": lines,
        "turns": turns,
        "pages": len(pages),
        "largest_page_bytes": largest[0],
        "read_seconds": reading,
        "health_idle_ms_median": idle_ms[0],
        "health_busy_ms_median": busy_ms[0],
        "health_busy_ms_max": busy_ms[2],
        "page_ms_median": page_ms[0],
    }


if __name__ == "__main__":
    print("\n".join(run(quick=True)["lines"]))
