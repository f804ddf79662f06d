import sys
from pathlib import Path


def test_benchmark_runs_quick() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import bench.resilience as b

    result = b.run(quick=True)
    assert result["n"] == 2_000
    assert len(result["lines"]) == 7
    for key in ("bare_us", "full_us", "full_added_us", "retry_budget_breaker_us"):
        assert isinstance(result[key], float)
    assert result["full_us"] > 0
