"""bench/reads.py runs (numbers are reported, never asserted on time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reads.py"


def test_reads_benchmark_runs_quick() -> None:
    spec = importlib.util.spec_from_file_location("bench_reads", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(quick=True)
    assert len(result["lines"]) == 6
    # 2 readers x (200 runs in pages of 100, cut by the event budget; 400 messages in 1 page)
    assert result["pages"] >= 2 * 3
    assert 0 < result["largest_page_bytes"] < 5_000_000
    for key in ("health_idle_ms_median", "health_busy_ms_median", "page_ms_median"):
        assert result[key] > 0
