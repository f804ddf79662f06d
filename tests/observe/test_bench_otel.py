"""The export benchmark runs (its numbers are reported, never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path


def test_benchmark_runs_quick() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import bench.otel as b

    result = b.run(quick=True)
    assert result["turns"] == 10 and len(result["lines"]) == 5
    for key in ("turn_us_off", "turn_us_on", "ratio", "cpu_us_off", "cpu_us_on", "cpu_ratio"):
        assert isinstance(result[key], float) and result[key] > 0
