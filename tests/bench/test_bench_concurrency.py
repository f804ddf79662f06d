"""`bench concurrency --quick` runs on both stores and reports latency, throughput, loop
lag and memory for spread and simultaneous arrivals (numbers are reported, never asserted
on time)."""

from __future__ import annotations

from tests.bench.support import leftover_schemas, load


def test_concurrency_benchmark_runs_quick(store_url: str) -> None:
    result = load("concurrency").run(quick=True, store=store_url)
    assert result["turns"] == 50
    assert result["simulated_ms_per_turn"] == 640.0  # 3 x 200 ms model + 2 x 20 ms tools
    phases = result["phases"]
    assert phases["spread"]["spread_ms"] == 640.0 and phases["burst"]["spread_ms"] == 0.0
    for phase in phases.values():
        assert phase["added_ms_p50"] <= phase["added_ms_p99"] <= phase["added_ms_max"]
        assert phase["turns_per_s"] > 0 and phase["commits_per_s"] > 0
        assert phase["commits_per_turn"] >= 1  # the store really recorded every turn
    assert result["rss_peak_mb"] > 0
    lines = result["lines"]
    assert len(lines) == 7
    assert "target (issue 12): added p99 <= 50 ms with the arrivals spread" in lines[5]
    if store_url.startswith("postgresql://"):
        assert result["store"] == "postgresql"
        assert leftover_schemas(result["throwaway_prefix"]) == []
    else:
        assert result["store"] == "sqlite"
