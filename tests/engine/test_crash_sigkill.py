"""Crash test with real processes and real SIGKILL.

Demo processes run turns on a shared SQLite file and are killed at many points: right
after a given number of steps were recorded (between steps) and a moment later (inside
the next model call, or inside a write tool after its side effect landed but before its
step was recorded). Later demo turns resume what they find abandoned; a worker drains the
rest. Then: every turn completed, every side effect happened exactly once, each history
holds each turn once, and every trace is one complete tree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from orchestrion import Orchestrion

CLI = str(Path(sys.executable).parent / "orchestrion")
LATENCY = 0.3  # per model call; write tools wait LATENCY / 2 after recording their effect
STEPS_PER_TURN = 6  # 3 model calls + crm_lookup + book_appointment + send_email
MESSAGES_PER_TURN = 7  # user, assistant, tool, assistant, tool, tool, assistant


def _query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # the file is still being created
        return []


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def _run_and_kill(db: Path, conversation: str, message: str, kill_after_steps: int,
                  inside: bool) -> str:
    """Start a demo turn, kill it with SIGKILL at the chosen point; return what happened."""
    proc = subprocess.Popen(
        [CLI, "--store", f"sqlite:///{db}", "demo", "--conversation", conversation,
         "--message", message, "--latency", str(LATENCY), "--no-trace"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )

    def run_id() -> str | None:
        rows = _query(db, "SELECT id FROM runs WHERE input LIKE ?", (f"%{message}%",))
        return str(rows[0][0]) if rows else None

    def steps_recorded() -> bool:
        rid = run_id()
        if rid is None:
            return False
        rows = _query(db, "SELECT count(*) FROM steps WHERE run_id = ?", (rid,))
        return bool(rows) and int(rows[0][0]) >= kill_after_steps  # type: ignore[call-overload]

    reached = _wait_for(steps_recorded, timeout=30)
    if reached and inside:
        time.sleep(LATENCY / 4)  # now inside the next step
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        outcome = "killed"
    else:
        outcome = "finished"
    proc.wait()  # reap it: a zombie still owns its pid
    assert run_id() is not None, proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return outcome


def test_sigkill_at_many_points_then_resume(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    conversations = ["conv-a", "conv-b", "conv-c"]
    plan = [
        # (kill after N recorded steps, kill inside the next step?)
        (0, False), (0, True), (1, False), (1, True), (2, True), (3, False),
        (3, True), (4, True), (5, False), (5, True), (2, False), (4, False),
    ]
    outcomes = []
    for i, (steps, inside) in enumerate(plan):
        message = f"I'm customer 42, turn {i}: please move me to Friday {8 + i}:00"
        outcomes.append(
            _run_and_kill(db, conversations[i % 3], message, steps, inside)
        )
    assert outcomes.count("killed") >= len(plan) - 3, outcomes

    drained = subprocess.run(
        [CLI, "--store", f"sqlite:///{db}", "worker", "--drain"],
        capture_output=True, text=True, timeout=120,
    )
    assert drained.returncode == 0, drained.stderr
    asyncio.run(_check_invariants(db, len(plan)))


async def _check_invariants(db: Path, turns: int) -> None:
    async with Orchestrion(f"sqlite:///{db}") as orx:
        store = orx.store
        runs = await store.list_runs(limit=1000)
        assert len(runs) == turns
        assert Counter(r.status for r in runs) == {"succeeded": turns}, [
            (r.id, r.status, r.error) for r in runs
        ]
        assert any(r.epoch > 1 for r in runs), "no run was ever taken over"

        # Side effects: exactly one booking and one email per turn, keyed by a stable key.
        effects = await store.list_effects()
        per_run = Counter((e.run_id, e.kind) for e in effects)
        for r in runs:
            assert per_run[(r.id, "booking")] == 1, f"run {r.id}: {per_run}"
            assert per_run[(r.id, "email")] == 1, f"run {r.id}: {per_run}"
        assert len(effects) == 2 * turns
        for r in runs:
            slot = r.input["message"]["content"].rsplit("to ", 1)[1]
            booking = next(e for e in effects if e.run_id == r.id and e.kind == "booking")
            assert booking.payload["slot"] == slot

        # History: each turn once, in queue order, whole.
        by_conversation: dict[str, list] = {}
        for r in sorted(runs, key=lambda r: r.position):
            by_conversation.setdefault(r.conversation_id, []).append(r)
        for conversation_id, conv_runs in by_conversation.items():
            history = await orx.history(conversation_id)
            assert len(history) == MESSAGES_PER_TURN * len(conv_runs)
            users = [m.content for m in history if m.role == "user"]
            assert users == [r.input["message"]["content"] for r in conv_runs]
            conversation = await store.get_conversation(conversation_id)
            assert conversation.version == len(conv_runs)
            assert conversation.state == "AWAITING_INPUT"

        # Traces: one complete tree per run, every step exactly once.
        for r in runs:
            roots = await orx.trace(r.id)
            assert len(roots) == 1, f"run {r.id} has {len(roots)} roots"
            spans = roots[0].walk()
            unfinished = [s.name for s in spans if not s.complete]
            assert not unfinished, f"run {r.id}: unfinished spans {unfinished}"
            step_spans = [s for s in spans if s.type == "step.finished"]
            assert len(step_spans) == STEPS_PER_TURN, [s.name for s in step_spans]
            assert len({s.span_id for s in step_spans}) == STEPS_PER_TURN
            assert roots[0].attributes["run.status"] == "succeeded"
