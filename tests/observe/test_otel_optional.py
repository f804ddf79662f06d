"""Without configuration nothing of OpenTelemetry is imported; without the extra installed
a configured environment only earns a warning (checked in fresh processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

TURN = """
import asyncio, logging, sys
logging.basicConfig(level=logging.WARNING)
from orchestrion import Orchestrion
from tests.observe.agents import weather_agent

async def main():
    async with Orchestrion("sqlite:///{db}", agents=[weather_agent()]) as orx:
        result = await orx.send("weather", "hi")
        print("status", result.status)
        print("telemetry", orx.telemetry is not None)
asyncio.run(main())
print("otel modules", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""

# Makes `import opentelemetry...` fail as if the package were not installed.
NOT_INSTALLED = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_configuration_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    done = _run(TURN.format(db=tmp_path / "plain.db"))
    assert done.returncode == 0, done.stderr
    assert "status succeeded" in done.stdout
    assert "telemetry False" in done.stdout
    assert "otel modules []" in done.stdout


def test_configured_but_not_installed_warns_and_changes_nothing(tmp_path: Path) -> None:
    done = _run(
        NOT_INSTALLED + TURN.format(db=tmp_path / "missing.db"),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert done.returncode == 0, done.stderr
    assert "status succeeded" in done.stdout and "telemetry False" in done.stdout
    assert "otel modules []" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "not installed" in line]
    assert len(warnings) == 1 and "pip install 'orchestrion[otel]'" in warnings[0], done.stderr


def test_configured_and_installed_exports(tmp_path: Path) -> None:
    """The same script with the extra present: telemetry is on (the control case)."""
    done = _run(
        TURN.format(db=tmp_path / "on.db"),
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
    )
    assert done.returncode == 0, done.stderr
    assert "telemetry True" in done.stdout
    assert '"name": "invoke_agent weather"' in done.stdout  # the console exporter's JSON


def test_sdk_disabled_turns_it_off(tmp_path: Path) -> None:
    done = _run(
        TURN.format(db=tmp_path / "off.db"),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_SDK_DISABLED="true",
    )
    assert done.returncode == 0, done.stderr
    assert "telemetry False" in done.stdout and "otel modules []" in done.stdout
