"""A fleet of real `orchestrion worker` processes on one PostgreSQL schema.

Every test runs the console script against its own schema and checks invariants from the
store afterwards: every turn ran to success once, each side effect happened once, each
history holds each turn once and in queue order. No timing is asserted; the timeouts are
hang guards for a broken fleet.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.support import (
    Fleet,
    all_settled,
    check_exactly_once,
    count_where,
    run,
    submit,
    wait_for,
)
from tests.store.pg import fresh_schema, sql


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fresh_schema("fleet") as schema:
        fleet = Fleet(schema, tmp_path)
        try:
            yield fleet
        finally:
            fleet.stop_all()


def _settle(fleet: Fleet, total: int) -> None:
    settled = wait_for(lambda: all_settled(fleet.schema, total))
    logs = "\n".join(fleet.log(p)[-2000:] for p in fleet.procs)
    assert settled, f"runs did not settle; worker logs:\n{logs}"


def _running_steps_of(schema: str, pid: int) -> int:
    """Steps recorded by runs that the worker with this pid holds right now."""
    return count_where(
        schema,
        "SELECT count(*) FROM {s}.steps st JOIN {s}.runs r ON r.id = st.run_id "
        "WHERE r.status = 'running' AND r.owner LIKE %s",
        (f"%/{pid}/%",),
    )


def test_hundreds_of_turns_on_three_workers_run_exactly_once(fleet: Fleet) -> None:
    for _ in range(3):
        fleet.start()
    conversations = [f"conv-{i}" for i in range(40)]
    runs = run(submit(fleet.url, "support", conversations, 5))  # 200 turns
    _settle(fleet, len(runs))
    facts = run(check_exactly_once(fleet.url, [r.id for r in runs], 5))
    # Each turn was claimed once (epoch 1) and started once, never resumed.
    assert facts["epochs"] == {1: len(runs)}
    assert set(facts["started"].values()) == {1}
    assert sum(facts["resumed"].values()) == 0
    assert len(facts["owners"]) >= 2, facts["owners"]  # the work was shared
    # SIGTERM: every worker stops cleanly.
    for proc in fleet.procs:
        proc.send_signal(signal.SIGTERM)
    for proc in fleet.procs:
        assert proc.wait(timeout=60) == 0, fleet.log(proc)
        assert "worker stopped (SIGTERM)" in fleet.log(proc)


def test_kill_9_a_worker_mid_run_and_its_runs_finish_elsewhere(fleet: Fleet) -> None:
    victim = fleet.start()
    conversations = [f"kill-{i}" for i in range(8)]
    runs = run(submit(fleet.url, "slow", conversations, 1))
    # Wait until the victim holds runs that are part-way through (steps recorded).
    assert wait_for(lambda: _running_steps_of(fleet.schema, victim.pid) >= 3), fleet.log(victim)
    held = {
        str(r[0])
        for r in sql(
            f'SELECT id FROM "{fleet.schema}".runs WHERE status = %s AND owner LIKE %s',
            ("running", f"%/{victim.pid}/%"),
        )
    }
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert held
    fleet.start()
    fleet.start()
    _settle(fleet, len(runs))
    facts = run(check_exactly_once(fleet.url, [r.id for r in runs], 1))
    rows = sql(f'SELECT id, epoch, owner FROM "{fleet.schema}".runs')
    taken_over = {str(r[0]) for r in rows if int(r[1]) >= 2}  # type: ignore[call-overload]
    assert held <= taken_over  # every run the victim held was taken over ...
    for rid, _epoch, owner in rows:
        if rid in held:
            assert f"/{victim.pid}/" not in str(owner)  # ... and finished by another worker
            assert facts["resumed"][str(rid)] == 1


def test_two_workers_racing_for_one_conversation_never_fork_it(fleet: Fleet) -> None:
    runs = run(submit(fleet.url, "support", ["contested"], 30))
    fleet.start()
    fleet.start()
    _settle(fleet, len(runs))
    facts = run(check_exactly_once(fleet.url, [r.id for r in runs], 30))
    assert facts["epochs"] == {1: len(runs)}
    # The history is one line: message index blocks belong to the runs in queue order.
    blocks = sql(
        f'SELECT m.run_id FROM "{fleet.schema}".messages m '
        "WHERE m.conversation_id = 'contested' ORDER BY m.idx"
    )
    order = [str(b[0]) for i, b in enumerate(blocks) if i % 7 == 0]
    assert order == [r.id for r in sorted(runs, key=lambda r: r.position)]
    assert all(str(blocks[i][0]) == order[i // 7] for i in range(len(blocks)))


def test_connections_terminated_mid_run_all_runs_finish(fleet: Fleet) -> None:
    fleet.start()
    fleet.start()
    conversations = [f"cut-{i}" for i in range(10)]
    runs = run(submit(fleet.url, "slow", conversations, 2))
    terminated = 0
    for _ in range(3):
        # Cut every connection of this schema's stores (workers' pools and listeners)
        # while turns are part-way through.
        wait_for(
            lambda: (
                count_where(
                    fleet.schema,
                    "SELECT count(*) FROM {s}.steps st JOIN {s}.runs r ON r.id = st.run_id "
                    "WHERE r.status = 'running'",
                )
                > 0
            )
        )
        rows = sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"orchestrion/{fleet.schema}",),
        )
        terminated += sum(1 for r in rows if r[0])
        time.sleep(0.4)
    assert terminated > 0
    _settle(fleet, len(runs))
    facts = run(check_exactly_once(fleet.url, [r.id for r in runs], 2))
    assert sum(facts["started"].values()) == len(runs)
    assert count_where(fleet.schema, "SELECT count(*) FROM {s}.runs WHERE status = 'running'") == 0
    for proc in fleet.procs:
        assert proc.poll() is None, fleet.log(proc)  # the workers survived the cuts


def test_sigterm_hands_unfinished_runs_back_to_the_fleet(fleet: Fleet) -> None:
    leaving = fleet.start("--grace", "0")
    conversations = [f"term-{i}" for i in range(6)]
    runs = run(submit(fleet.url, "slow", conversations, 1))
    assert wait_for(lambda: _running_steps_of(fleet.schema, leaving.pid) >= 2), fleet.log(leaving)
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0, fleet.log(leaving)
    log = fleet.log(leaving)
    assert "released" in log and "worker stopped (SIGTERM)" in log, log
    # Nothing is left owned by the process that left: released runs are queued again.
    left = count_where(
        fleet.schema,
        "SELECT count(*) FROM {s}.runs WHERE status = 'running' AND owner LIKE %s",
        (f"%/{leaving.pid}/%",),
    )
    assert left == 0
    fleet.start()
    _settle(fleet, len(runs))
    facts = run(check_exactly_once(fleet.url, [r.id for r in runs], 1))
    assert sum(facts["resumed"].values()) >= 1  # some turn was continued by the new worker
