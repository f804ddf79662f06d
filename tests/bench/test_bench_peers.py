"""`bench peers --quick` runs orchestrion, LangGraph and DBOS on both stores when the bench
extra is installed (skipped, with the reason, otherwise: CI does not install it); without
the extra the command says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bench.support import leftover_schemas, load
from tests.cli.helpers import REPO, env

needs_extra = pytest.mark.skipif(
    bool(load("peers").missing_extra()),
    reason="the bench extra is not installed (pip install -e '.[bench]'): LangGraph and DBOS",
)


def test_peers_without_the_extra_says_how_to_install() -> None:
    # An interpreter where `dbos` cannot be imported, whether or not it is installed.
    code = (
        "import sys; sys.modules['dbos'] = None\n"
        "from orchestrion.cli import main\n"
        "main(['bench', 'peers', '--quick'], prog_name='orchestrion')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env(),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "pip install -e '.[bench]'" in line


@needs_extra
def test_peers_benchmark_runs_quick(store_url: str) -> None:
    result = load("peers").run(quick=True, store=store_url)
    names = [row["system"] for row in result["systems"]]
    postgres = store_url.startswith("postgresql://")
    if postgres:
        assert names == [
            "orchestrion",
            "LangGraph PostgresSaver, durability 'async'",
            "LangGraph PostgresSaver, durability 'sync'",
            "DBOS on PostgreSQL",
        ]
        assert leftover_schemas(result["throwaway_prefix"]) == []
    else:
        assert names == [
            "orchestrion, durability full",
            "orchestrion, durability normal",
            "LangGraph SqliteSaver, durability 'async'",
            "LangGraph SqliteSaver, durability 'sync'",
            "DBOS on SQLite",
        ]
    assert result["reference"] == names[0]
    for row in result["systems"]:
        assert row["us_per_tool_call"] > 0
        assert row["commits_per_turn"] >= 1  # every system really wrote to its store
        assert (row["rows_per_turn"] is None) == postgres
        assert row["fsync"] and row["per_step"]
    assert result["systems"][0]["ratio_to_reference"] == 1.0
    assert result["raw_commit_us"] > 0
    lines = result["lines"]
    assert any(line.lstrip().startswith("raw ") for line in lines)
    assert "target" in lines[-1]
