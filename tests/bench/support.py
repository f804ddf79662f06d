"""Loading a benchmark module from bench/ (as `orchestrion bench NAME` does), and checking
that a PostgreSQL benchmark dropped its throwaway schemas."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.store.pg import sql

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"orchestrion_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leftover_schemas(prefix: str) -> list[object]:
    """Schemas a benchmark run (whose throwaway names start with `prefix`) left behind."""
    assert prefix.startswith("orchestrion_bench_")
    return [row[0] for row in sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                  (f"{prefix}%",))]  # fmt: skip
