"""Run the chaos server inside a test: a real uvicorn on a free loopback port, in a thread.

    with running_chaos_server("flaky") as base_url:
        model = resolve_model("openai:gpt-x", base_url=f"{base_url}/v1", api_key="test")
        ...
        print(chaos_log(base_url)["counts"])

`base_url` has no /v1: OpenAI clients want f"{base_url}/v1", Anthropic clients want
base_url as is (the server also answers /chat/completions without the prefix).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from orchestrion.chaos.plan import PRESETS, FaultPlan, preset
from orchestrion.chaos.server import ChaosApp

PlanLike = FaultPlan | str | Path | dict[str, Any] | None


def as_plan(plan: PlanLike) -> FaultPlan:
    """A FaultPlan from a plan, a preset name, a plan file path or a plain dict."""
    if plan is None:
        return FaultPlan()
    if isinstance(plan, FaultPlan):
        return plan
    if isinstance(plan, dict):
        return FaultPlan.model_validate(plan)
    if isinstance(plan, str) and plan in PRESETS:
        return preset(plan)
    return FaultPlan.load(plan)


@contextlib.contextmanager
def running_chaos_server(
    plan: PlanLike = None, *, host: str = "127.0.0.1", startup_timeout: float = 10.0
) -> Iterator[str]:
    """Start the chaos server for the duration of the block and yield its base URL."""
    app = ChaosApp(as_plan(plan))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))  # port 0: the OS picks a free one, no race with other tests
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # A hung or stalled call must not hold the shutdown for long.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="chaos-server", daemon=True
    )
    thread.start()
    give_up = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > give_up:
            sock.close()
            raise RuntimeError("the chaos server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def chaos_log(base_url: str, *, fault: str | None = None) -> dict[str, Any]:
    """The server's injection log: {"calls", "counts", "entries"}."""
    params = {"fault": fault} if fault else None
    response = httpx.get(f"{base_url}/chaos/log", params=params, timeout=10)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def reset_chaos(base_url: str) -> None:
    httpx.post(f"{base_url}/chaos/reset", timeout=10).raise_for_status()


def set_chaos_plan(base_url: str, plan: PlanLike) -> None:
    """Replace the running server's plan (this also resets its log and call counter)."""
    body = as_plan(plan).model_dump_json()
    httpx.put(f"{base_url}/chaos/plan", content=body, timeout=10).raise_for_status()
