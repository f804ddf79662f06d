"""bench/streaming.py runs (numbers are reported, never asserted on time)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "streaming.py"


def test_streaming_benchmark_runs_quick() -> None:
    spec = importlib.util.spec_from_file_location("bench_streaming", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(quick=True)
    assert len(result["lines"]) == 8
    assert result["events_per_run"] > 20  # the fan-out run stored every tool step
    for key in (
        "first_text_sse_ms_median",
        "sse_events_per_s",
        "subscribe_events_per_s",
        "typed_event_convert_us",
    ):
        assert result[key] > 0
