"""`orchestrion --store URL bench steps`: the global --store chooses what the benchmark
measures (it used to be ignored), on SQLite (throwaway files beside the given one) and
PostgreSQL (throwaway schemas of that database); $ORCHESTRION_STORE is not used."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.support import leftover_schemas
from tests.cli.helpers import cli, env
from tests.store.pg import fresh_schema, store_url


def test_bench_steps_measures_beside_the_given_sqlite_file(tmp_path: Path) -> None:
    folder = tmp_path / "disk"
    folder.mkdir()
    out = cli("--store", f"sqlite:///{folder / 'app.db'}", "bench", "steps", "--quick").stdout
    assert f"in temporary SQLite files in {folder}" in out
    assert list(folder.iterdir()) == []  # throwaway files, removed; the store not created
    alias = cli("bench", "steps", "--quick", "--store", f"sqlite:///{folder / 'app.db'}").stdout
    assert f"in temporary SQLite files in {folder}" in alias


def test_bench_steps_ignores_the_environment_store(tmp_path: Path) -> None:
    environ = env(ORCHESTRION_STORE=f"sqlite:///{tmp_path / 'mine.db'}")
    out = cli("bench", "steps", "--quick", cwd=tmp_path, environ=environ).stdout
    assert f"in temporary SQLite files in {tmp_path}" not in out
    assert list(tmp_path.iterdir()) == []


def test_bench_steps_measures_the_given_postgresql_database() -> None:
    with fresh_schema("benchcli") as schema:
        proc = cli("--store", store_url(schema), "bench", "steps", "--quick", "--json",
                   timeout=600)  # fmt: skip
        numbers = json.loads(proc.stdout)
        assert numbers["store"] == "postgresql"
        assert numbers["step_us_postgres"] > 0 and numbers["turns_per_s_1_workers"] > 0
        # The public-API figure, next to a raw INSERT commit, with what a turn wrote.
        assert numbers["api_us_per_tool_call_postgres"] > 0
        assert numbers["api_raw_commit_us_postgres"] > 0
        assert 1 <= numbers["api_writes_per_turn_postgres"] <= 10 + 11 + 3
        assert numbers["api_events_per_turn_postgres"] >= 21
        assert leftover_schemas(numbers["throwaway_prefix"]) == []
