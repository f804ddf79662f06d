"""`bench fleet --quick` drains demo turns with worker processes on PostgreSQL next to the
server's commit rate; without a PostgreSQL store it says what it needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.support import leftover_schemas
from tests.cli.helpers import cli
from tests.store.pg import fresh_schema, store_url


def test_fleet_measures_workers_against_the_commit_rate() -> None:
    with fresh_schema("benchfleet") as schema:
        proc = cli("--store", store_url(schema), "bench", "fleet", "--quick", "--json",
                   timeout=600)  # fmt: skip
    numbers = json.loads(proc.stdout)
    assert numbers["worker_counts"] == [1, 2]
    assert numbers["commits_per_demo_turn"] >= 1
    for workers in (1, 2):
        assert numbers[f"turns_per_s_{workers}"] > 0
        assert numbers[f"commits_per_s_{workers}"] > 0
        bound = numbers[f"commits_per_s_{workers}"] / numbers["commits_per_demo_turn"]
        assert numbers[f"bound_turns_per_s_{workers}"] == pytest.approx(bound, rel=0.01)
        assert numbers[f"ratio_to_bound_{workers}"] > 0
    assert numbers["commit_rate_client"] in ("pgbench", "python threads")
    assert leftover_schemas(numbers["throwaway_prefix"]) == []


@pytest.mark.parametrize("store", [None, "sqlite"])
def test_fleet_without_postgresql_says_what_it_needs(tmp_path: Path, store: str | None) -> None:
    args = ["--store", f"sqlite:///{tmp_path / 'app.db'}"] if store else []
    proc = cli(*args, "bench", "fleet", "--quick", check=False)
    assert proc.returncode == 2
    assert "give --store postgresql://" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
