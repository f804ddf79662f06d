"""Fleet breakers fed by short-lived processes (one-shot CLI commands, cron jobs,
serverless workers): every outcome counts by when it happened, whether or not the process
that recorded it is still alive, and a process publishes its outcomes before it exits.

Real processes (tests/resilience/oneshot_worker.py), a real store shared by them (a SQLite
file and a PostgreSQL schema), and a real OpenAI-compatible server on loopback answering
500 (the chaos server). Each process makes one call of up to 4 attempts with the default
breaker settings (minimum_calls 20, failure rate 50%).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrion.chaos.testing import chaos_log, running_chaos_server

WORKER = Path(__file__).with_name("oneshot_worker.py")
CLI = Path(sys.executable).with_name("orchestrion")
PROCESSES = 8
ATTEMPTS = 4
MINIMUM_CALLS = 20  # CircuitBreaker's default
BREAKER = "model:openai:gpt-test"
HANG_GUARD = 120.0  # a broken worker must not hang the suite; not a timing assertion


@pytest.fixture
def chaos_url() -> Iterator[str]:
    with running_chaos_server() as url:  # a fresh server per test: its log counts our calls
        yield url


def check_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "not open" not in stderr, stderr


async def one_shot(store_url: str, chaos_url: str, name: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        store_url,
        chaos_url,
        name,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD)
    assert proc.returncode == 0, err.decode()
    check_clean(err.decode())
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def breakers_cli(store_url: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run(
        [str(CLI), "--store", store_url, "breakers", "--json"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    check_clean(done.stderr)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return {row["name"]: row for row in rows}


async def test_one_shot_processes_in_turn_open_the_fleet_breaker(
    store_url: str, chaos_url: str
) -> None:
    results = [await one_shot(store_url, chaos_url, f"cli-{i}") for i in range(PROCESSES)]

    made = sum(r["attempts"] for r in results)
    assert chaos_log(chaos_url)["calls"] == made  # what the provider really received
    # Each process alone saw 4 failures, far below minimum_calls; the ones before it had
    # exited long ago. Their published outcomes still count: the fifth process reaches 20
    # and opens the breaker, and the processes after it fail fast without calling.
    per_process = MINIMUM_CALLS // ATTEMPTS
    assert [r["outcome"] for r in results[:per_process]] == ["failed"] * per_process
    assert [r["attempts"] for r in results[:per_process]] == [ATTEMPTS] * per_process
    for r in results[per_process:]:
        assert (r["outcome"], r["attempts"]) == ("rejected", 0), r
        assert r["error"].startswith(f"circuit breaker '{BREAKER}' is open")
    assert made == MINIMUM_CALLS

    row = breakers_cli(store_url)[BREAKER]
    assert row["state"] == "open"
    assert (row["calls"], row["failure_rate"]) == (made, 1.0)  # the calls that were made


async def test_one_shot_processes_at_once_publish_before_they_exit(
    store_url: str, chaos_url: str
) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            store_url,
            chaos_url,
            f"cli-{i}",
            "wait",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), HANG_GUARD)
            assert line.strip() == b"ready"
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate(b"go\n") for proc in procs)), HANG_GUARD
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
    results = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        check_clean(err.decode())
        results.append(json.loads(out.decode().strip().splitlines()[-1]))

    made = sum(r["attempts"] for r in results)
    assert chaos_log(chaos_url)["calls"] == made
    assert made >= MINIMUM_CALLS
    # All ran at once, so no process saw enough failures while it ran; what each published
    # on its way out added up, and the fleet's breaker opened.
    row = breakers_cli(store_url)[BREAKER]
    assert row["state"] == "open"
    # Every call made is in the window that opened it, including the outcomes of the
    # processes that exited after the transition.
    assert (row["calls"], row["failure_rate"]) == (made, 1.0)
