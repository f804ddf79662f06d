"""A one-shot process for tests/resilience/test_short_lived_processes.py (not a test module).

    python oneshot_worker.py STORE_URL CHAOS_URL NAME [wait]

Like a one-shot CLI command: open the store, make ONE model call through the process's
BreakerRegistry (the runtime's set-up: breakers and budgets shared through the store,
default breaker settings) to an OpenAI-compatible server that answers 500, up to 4
attempts; then close the model, the registry and the store, and exit. With `wait`, it
prints "ready" once its store is open and waits for "go" on stdin (so several start at
once). It prints one JSON line: {"attempts", "outcome", "error"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback

from orchestrion.errors import ProviderUnavailable
from orchestrion.models import Message, ModelRequest, complete
from orchestrion.models.openai import OpenAIModel
from orchestrion.resilience import Attempt, BreakerOpen, RetryPolicy
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.store import open_store

RETRY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.02, max_elapsed=None)


async def main() -> None:
    url, chaos, name = sys.argv[1], sys.argv[2], sys.argv[3]
    wait = len(sys.argv) > 4 and sys.argv[4] == "wait"
    store = open_store(url)
    await store.open()
    registry = BreakerRegistry(store, share_budgets=True, worker_id=name)
    model = OpenAIModel(
        "gpt-test",
        api_key="k",
        base_url=f"{chaos}/v1",
        headers={"x-chaos-fault": "server_error"},
    )
    pipeline = registry.pipeline(f"model:{model.name}", retry=RETRY)
    request = ModelRequest(messages=(Message.user("hello"),))
    attempts = 0

    async def ask(attempt: Attempt) -> str:
        nonlocal attempts
        attempts += 1
        return (await complete(model, request)).message.content or ""

    if wait:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("expected 'go' on stdin")
    outcome, error = "answered", None
    try:
        await pipeline.call(ask)
    except BreakerOpen as exc:
        outcome, error = "rejected", str(exc)
    except ProviderUnavailable as exc:
        outcome, error = "failed", str(exc)
    finally:
        await model.aclose()
        await registry.close()
        await store.close()
    print(json.dumps({"attempts": attempts, "outcome": outcome, "error": error}), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
