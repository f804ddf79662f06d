"""bench/context.py runs, on both stores (numbers are reported, never asserted on time;
what does not depend on the machine is: reads and bytes per turn)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.store.pg import require_postgres
from tests.store.pg import store_url as postgres_url

BENCH = Path(__file__).resolve().parents[2] / "bench" / "context.py"


def load() -> object:
    spec = importlib.util.spec_from_file_location("bench_context", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(result: dict[str, object]) -> None:
    assert result["conversations"] == 20 and result["turns"] == 30
    small = result["window(max_tokens=1000)"]
    assert isinstance(small, dict)
    # Machine-independent: a window reads and sends the same whatever the length.
    assert small["ratios"]["reads"] == 1.0 and small["ratios"]["bytes"] == 1.0
    kept = result["keep_all()"]
    assert isinstance(kept, dict) and kept["ratios"]["bytes"] > 5  # grows with the length
    assert kept["turn 30"]["rows"] >= 60  # the whole history, read every turn
    assert any("target" in line for line in result["lines"])  # type: ignore[union-attr]


def test_context_benchmark_runs_quick_on_sqlite() -> None:
    check(load().run(quick=True))  # type: ignore[attr-defined]


def test_context_benchmark_runs_quick_on_postgres() -> None:
    require_postgres()
    check(load().run(quick=True, store=postgres_url("ignored")))  # type: ignore[attr-defined]
