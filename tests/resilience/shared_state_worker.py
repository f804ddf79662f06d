"""A worker process for tests/resilience/test_shared_state.py (not a test module itself).

    python shared_state_worker.py MODE STORE_PATH WORKER_ID PARAMS_JSON

It talks to the test over stdin/stdout, one line at a time: it prints "ready" once its
store is open, waits for "go", then prints JSON lines. Modes:

- fail:     record up to `per_process` failures on breaker "llm", then sync until it sees
            the breaker open; finally try one more call, which must fail fast.
- observe:  a fresh process that records nothing: one call, which must fail fast.
- probe:    try to take a half-open probe slot; report; wait for "release"; record success.
- retry:    claim run `run_id` and call a pipeline with the step's StepAttemptJournal.
            Without `resume`, the call always fails retryably (the test SIGKILLs the
            process in the middle of a backoff); with `resume`, the process takes the run
            over (a new lease epoch) and the call succeeds.
- budget:   calls that always fail, retried through a registry's retry budget (shared
            through the store, or local); reports the calls and attempts it made.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from typing import Any

from orchestrion.errors import ProviderUnavailable
from orchestrion.resilience import (
    Attempt,
    BreakerOpen,
    CircuitBreaker,
    Permit,
    ResiliencePipeline,
    RetryBudgetExhausted,
    RetryPolicy,
)
from orchestrion.resilience.attempts import StepAttemptJournal
from orchestrion.resilience.clock import SystemClock
from orchestrion.resilience.registry import BreakerRegistry
from orchestrion.store import SQLiteStore


def say(obj: Any) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


def wait_for(line: str) -> None:
    got = sys.stdin.readline().strip()
    if got != line:
        raise SystemExit(f"expected {line!r} on stdin, got {got!r}")


class ShiftedClock(SystemClock):
    """The real clock, `offset` seconds later: a process that runs "after" wait_in_open
    without the test sleeping through it. Every prober shares the same offset."""

    __slots__ = ("offset",)

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def breaker_of(store: SQLiteStore, me: str, params: dict[str, Any], events: list[Any]) -> Any:
    registry = BreakerRegistry(
        store,
        params["breaker"],
        lambda type_, attrs: events.append([type_, attrs]),
        clock=ShiftedClock(params.get("offset", 0.0)),
        worker_id=me,
    )
    return registry.get("llm")


async def fail(store: SQLiteStore, me: str, params: dict[str, Any]) -> None:
    events: list[Any] = []
    breaker: CircuitBreaker = breaker_of(store, me, params, events)

    async def broken() -> None:
        raise ProviderUnavailable("overloaded", status_code=503)

    say("ready")
    wait_for("go")
    failures = rejected_early = 0
    for _ in range(params["per_process"]):
        try:
            await breaker.call(broken)
        except ProviderUnavailable:
            failures += 1
        except BreakerOpen:
            rejected_early += 1
            break
    deadline = time.monotonic() + params["patience"]
    while breaker.state != "open" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        await breaker.sync()
    called = False

    async def healthy() -> str:
        nonlocal called
        called = True
        return "ok"

    outcome: dict[str, Any] = {}
    try:
        outcome["result"] = await breaker.call(healthy)
    except BreakerOpen as exc:
        outcome = {"breaker": exc.breaker, "state": exc.state, "message": str(exc)}
    say(
        {
            "failures": failures,
            "rejected_early": rejected_early,
            "state": breaker.state,
            "epoch": breaker.epoch,
            "called": called,
            "outcome": outcome,
            "events": events,
        }
    )


async def observe(store: SQLiteStore, me: str, params: dict[str, Any]) -> None:
    events: list[Any] = []
    breaker: CircuitBreaker = breaker_of(store, me, params, events)
    say("ready")
    wait_for("go")
    called = False

    async def healthy() -> str:
        nonlocal called
        called = True
        return "ok"

    outcome: dict[str, Any] = {}
    try:
        outcome["result"] = await breaker.call(healthy)
    except BreakerOpen as exc:
        outcome = {
            "breaker": exc.breaker,
            "state": exc.state,
            "probe_at": exc.probe_at,
            "message": str(exc),
        }
    say({"state": breaker.state, "called": called, "outcome": outcome, "events": events})


async def probe(store: SQLiteStore, me: str, params: dict[str, Any]) -> None:
    events: list[Any] = []
    breaker: CircuitBreaker = breaker_of(store, me, params, events)
    say("ready")
    wait_for("go")
    permit: Permit | None = None
    try:
        permit = await breaker.acquire()
        say({"granted": True, "probe": permit.probe})
    except BreakerOpen as exc:
        say({"granted": False, "breaker": exc.breaker, "state": exc.state, "message": str(exc)})
    wait_for("release")
    if permit is not None:
        await breaker.record(permit, "success")
    say({"state": breaker.state, "events": events})


def pipeline(events: list[Any]) -> ResiliencePipeline:
    policy = RetryPolicy(
        max_attempts=6,
        base_delay=0.5,
        multiplier=10.0,
        max_delay=5.0,
        jitter=False,
        max_elapsed=None,
    )

    def sink(type_: str, attrs: dict[str, Any]) -> None:
        events.append([type_, attrs])
        say({"event": type_, "attrs": attrs, "at": time.time()})

    return ResiliencePipeline("llm", retry=policy, on_event=sink)


async def retry(store: SQLiteStore, me: str, params: dict[str, Any]) -> None:
    resume = params["resume"]
    lease = await store.claim(
        params["run_id"],
        owner=me,
        expected_epoch=1 if resume else 0,
        lease_seconds=600,
        now=time.time(),
        dead_owner=params.get("dead_owner") if resume else None,
    )
    assert lease is not None, "claim lost"
    journal = StepAttemptJournal(store, lease, params["run_id"], params["seq"], pipeline="llm")
    events: list[Any] = []
    pipe = pipeline(events)

    async def call(attempt: Attempt) -> str:
        say({"attempt": attempt.number, "at": time.time()})
        if not resume:
            raise ProviderUnavailable("overloaded", status_code=529)
        return f"ok after attempt {attempt.number}"

    say("ready")
    wait_for("go")
    result = await pipe.call(call, journal=journal)
    say({"result": result, "epoch": lease.epoch})


async def budget(store: SQLiteStore, me: str, params: dict[str, Any]) -> None:
    """Make `calls` calls to dependency "llm" that always fail retryably (each attempt
    takes `attempt_sleep` seconds), through a registry whose budgets are shared through
    the store (or local, without `shared`); report calls and attempts made."""
    registry = BreakerRegistry(
        store,
        worker_id=me,
        budget_defaults=params["budget"],
        share_budgets=params["shared"],
    )
    policy = RetryPolicy(
        max_attempts=params["max_attempts"],
        base_delay=0.001,
        max_delay=0.001,
        jitter=False,
        max_elapsed=None,
    )
    pipe = registry.pipeline("llm", retry=policy, breaker=False)
    attempts = refused = 0

    async def broken(attempt: Attempt) -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(params["attempt_sleep"])
        raise ProviderUnavailable("overloaded", status_code=503)

    say("ready")
    wait_for("go")
    for _ in range(params["calls"]):
        try:
            await pipe.call(broken)
        except RetryBudgetExhausted:
            refused += 1
        except ProviderUnavailable:
            pass
    await registry.close()
    say({"calls": params["calls"], "attempts": attempts, "refused": refused})


MODES = {"fail": fail, "observe": observe, "probe": probe, "retry": retry, "budget": budget}


async def main() -> None:
    mode, path, me, params = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    store = SQLiteStore(path)
    await store.open()
    try:
        await MODES[mode](store, me, params)
    finally:
        await store.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
