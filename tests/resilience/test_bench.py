import sys
from pathlib import Path


def test_benchmark_runs_quick() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import bench.resilience as b

    result = b.run(quick=True)
    assert result["n"] == 2_000
    assert len(result["lines"]) == 10
    keys = ("bare_us", "full_us", "full_added_us", "retry_budget_breaker_us")
    for key in (*keys, "registry_local_us", "registry_shared_us", "registry_shared_added_us"):
        assert isinstance(result[key], float)
    assert result["full_us"] > 0
    # The shared variant really used the store, and not per call.
    assert 0 < result["shared_store_calls_per_1000"] < 1000 / 50
    assert any("BreakerRegistry(store, share_budgets=True)" in line for line in result["lines"])
