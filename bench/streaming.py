"""Streaming through the HTTP service versus in process.

1. Time to first text: from submitting a turn to the first text delta, (a) in process
   with `orx.stream` (live tokens), (b) in process with `orx.subscribe` (the durable,
   coalesced chunks a reattaching reader gets), (c) through the service: POST with SSE
   over loopback HTTP (uvicorn in a thread of this process, an httpx client).
2. Events per second one stream sustains: a finished run with many stored events read
   from the start, through SSE over HTTP versus `orx.subscribe` in process.

The agents are scripted (no network besides loopback); the store is a temporary SQLite file.
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

from orchestrion import Agent, Orchestrion, TextDelta, tool
from orchestrion.observe.public import public_event
from orchestrion.server import Limits, create_app, server_config
from orchestrion.testing import ScriptedModel, call, calls, say

KEY = "bench-key-0123456789abcdef"
TEXT = "Streaming tokens through the service. " * 8


@tool(effect="read", retry=None)
async def noop(i: int) -> int:
    """Return i."""
    return i


def _agents(fanout: int) -> list[Agent]:
    talk = Agent("talk", model=ScriptedModel([say(TEXT)], chunk_size=4, chunk_delay=0.001))
    many = Agent(
        "many",
        model=ScriptedModel([calls(*[call("noop", i=i) for i in range(fanout)]), say("done")]),
        tools=[noop],
    )
    return [talk, many]


def _start(db: Path, fanout: int) -> tuple[uvicorn.Server, threading.Thread, str]:
    orx = Orchestrion(f"sqlite:///{db}", agents=_agents(fanout))
    app = create_app(orx, keys={KEY: "bench"}, limits=Limits(keepalive_seconds=5))
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{port}"


async def _in_process(db: Path, turns: int, fanout: int) -> dict[str, Any]:
    async with Orchestrion(f"sqlite:///{db}", agents=_agents(fanout), tenant="bench") as orx:
        live: list[float] = []
        durable: list[float] = []
        for _ in range(turns):
            t0 = time.perf_counter()
            async for event in orx.stream("talk", "hi"):
                if isinstance(event, TextDelta):
                    live.append(time.perf_counter() - t0)
                    break
            t0 = time.perf_counter()
            run = await orx.submit("talk", "hi")
            orx.start(run.id)
            async for event in orx.subscribe(run.id):
                if isinstance(event, TextDelta):
                    durable.append(time.perf_counter() - t0)
                    break
        # A run with many events, then read from the start.
        run = await orx.submit("many", "go")
        orx.start(run.id)
        async for _ in orx.subscribe(run.id):
            pass
        best = float("inf")
        count = 0
        for _ in range(3):
            t0 = time.perf_counter()
            count = 0
            async for _ in orx.subscribe(run.id):
                count += 1
            best = min(best, time.perf_counter() - t0)
        # What the typed public events cost: the stored rows alone, then their conversion.
        rows_best = convert_best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            rows = await orx.store.read_events(run.id)
            t1 = time.perf_counter()
            for row in rows:
                public_event(row)
            rows_best = min(rows_best, t1 - t0)
            convert_best = min(convert_best, time.perf_counter() - t1)
        return {
            "live": live,
            "durable": durable,
            "many_run": run.id,
            "events": count,
            "read": best,
            "rows_read": rows_best,
            "convert": convert_best,
        }


def _service(url: str, turns: int, run_id: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    firsts: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(turns):
            # A new conversation per turn, as in process: the previous turn may still run.
            conversation = client.post("/v1/conversations", json={"agent": "talk"}).json()["id"]
            t0 = time.perf_counter()
            with client.stream(
                "POST", f"/v1/conversations/{conversation}/messages", json={"message": "hi"}
            ) as response:
                for line in response.iter_lines():
                    if line == "event: text.delta":
                        firsts.append(time.perf_counter() - t0)
                        break
        best = float("inf")
        count = 0
        for _ in range(3):
            t0 = time.perf_counter()
            count = 0
            with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        count += 1
            best = min(best, time.perf_counter() - t0)
    return {"first": firsts, "events": count, "read": best}


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return statistics.median(ordered) * 1000, p90 * 1000


def run(quick: bool = False) -> dict[str, Any]:
    turns, fanout = (3, 20) if quick else (30, 150)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        local = asyncio.run(_in_process(db, turns, fanout))
        server, thread, url = _start(db, fanout)
        try:
            remote = _service(url, turns, local["many_run"])
        finally:
            server.should_exit = True
            thread.join(30)
    live, durable, http = _ms(local["live"]), _ms(local["durable"]), _ms(remote["first"])
    sub_rate = local["events"] / local["read"]
    sse_rate = remote["events"] / remote["read"]
    convert_us = local["convert"] / local["events"] * 1e6
    convert_share = local["convert"] / local["read"]
    rows_rate = local["events"] / local["rows_read"]
    lines = [
        f"time to first text delta ({turns} turns; median / p90, ms):",
        f"  in process, orx.stream (live tokens)       {live[0]:8.2f} / {live[1]:8.2f}",
        f"  in process, orx.subscribe (durable chunks) {durable[0]:8.2f} / {durable[1]:8.2f}",
        f"  service, POST + SSE over loopback          {http[0]:8.2f} / {http[1]:8.2f}",
        f"events per second one stream sustains (a stored run of {local['events']} events,"
        " read from the start, best of 3):",
        f"  in process, orx.subscribe                  {sub_rate:10.0f} events/s",
        f"  service, GET /v1/runs/ID/events (SSE)      {sse_rate:10.0f} events/s",
        f"typed events: {convert_us:.1f} µs per event to convert a stored row, "
        f"{convert_share:.0%} of a subscribe read; the rows alone read at "
        f"{rows_rate:.0f} events/s",
    ]
    return {
        "lines": lines,
        "first_text_stream_ms_median": live[0],
        "first_text_stream_ms_p90": live[1],
        "first_text_subscribe_ms_median": durable[0],
        "first_text_subscribe_ms_p90": durable[1],
        "first_text_sse_ms_median": http[0],
        "first_text_sse_ms_p90": http[1],
        "events_per_run": float(local["events"]),
        "subscribe_events_per_s": sub_rate,
        "sse_events_per_s": sse_rate,
        "typed_event_convert_us": convert_us,
        "typed_event_share_of_subscribe": convert_share,
    }


if __name__ == "__main__":
    print("\n".join(run(quick=True)["lines"]))
