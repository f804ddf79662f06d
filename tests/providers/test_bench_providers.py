from __future__ import annotations

import importlib.util
from pathlib import Path


def test_providers_benchmark_runs_quick() -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "providers.py"
    spec = importlib.util.spec_from_file_location("bench_providers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(quick=True)
    assert result["calls"] == 5 and len(result["lines"]) == 3
    for protocol in ("openai", "anthropic"):
        numbers = result[protocol]
        assert numbers["ttft_adapter_us"] > 0 and numbers["total_raw_us"] > 0
