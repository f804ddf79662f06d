"""`bench steps --quick` runs and reports the public-API figure first, then the inner one
(its numbers are reported, never asserted on time). PostgreSQL: tests/cli/test_bench_store.py."""

from __future__ import annotations

from pathlib import Path

from tests.bench.support import load

TOOL_CALLS, MODEL_CALLS = 10, 11


def test_steps_reports_the_public_api_figure_first(tmp_path: Path) -> None:
    result = load("steps").run(quick=True, store=f"sqlite:///{tmp_path / 'app.db'}")
    lines = result["lines"]
    assert lines[0].startswith("public API: Orchestrion.send")
    target = next(i for i, line in enumerate(lines) if "target (issue 12)" in line)
    inner = next(i for i, line in enumerate(lines) if line.startswith("inner figure"))
    assert 0 < target < inner
    for durability in ("normal", "full"):
        assert result[f"api_us_per_tool_call_{durability}"] > 0
        assert result[f"api_raw_commit_us_{durability}"] > 0
        assert result[f"api_ratio_{durability}"] > 0
        # Counted on the store's connection: at most N + M + 3 commits (issue 12), each
        # of which changed rows; every step left events.
        commits = result[f"api_commits_per_turn_{durability}"]
        assert 1 <= commits <= TOOL_CALLS + MODEL_CALLS + 3
        assert result[f"api_rows_per_turn_{durability}"] >= commits
        assert result[f"api_writes_per_turn_{durability}"] >= 1
        assert result[f"api_events_per_turn_{durability}"] >= TOOL_CALLS + MODEL_CALLS
        assert result[f"step_us_{durability}"] > 0  # the inner figure
    assert list(tmp_path.iterdir()) == []  # throwaway files only, removed
