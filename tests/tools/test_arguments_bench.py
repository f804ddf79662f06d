"""bench/arguments.py still runs and measures what it says (no timing is asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_bench_runs_quick() -> None:
    path = Path(__file__).parents[2] / "bench" / "arguments.py"
    spec = importlib.util.spec_from_file_location("bench_arguments", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.run(quick=True)
    assert out["baseline_us"] > 0 and out["valid_us"] > 0
    assert out["valid_ratio"] == out["valid_us"] / out["baseline_us"]
    # The malformed workload exercises the outcomes it is labelled with.
    assert out["statuses"]["fenced"] == "repaired"
    assert out["statuses"]["double-encoded"] == "repaired"
    assert out["statuses"]["cut off"] == "invalid"
    assert out["statuses"]["wrong type"] == "invalid"
    assert set(out["repair_us"]) == set(out["statuses"])
    assert all(isinstance(line, str) for line in out["lines"])
