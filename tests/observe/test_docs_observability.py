"""The Python examples of docs/observability.md run as written, and print what the page
says they print (the environment-driven one exports to an OTLP receiver on loopback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.observe.otlp import Receiver

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "observability.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", PAGE, re.DOTALL)


def _run(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_page_has_its_three_examples() -> None:
    assert len(EXAMPLES) == 3


def test_providers_in_code_print_the_documented_spans(tmp_path: Path) -> None:
    done = _run(EXAMPLES[0], tmp_path)
    assert done.returncode == 0, done.stderr
    documented = PAGE.split("prints\n\n```\n", 1)[1].split("```", 1)[0]
    assert done.stdout == documented


def test_the_environment_alone_exports_over_otlp(tmp_path: Path, receiver: Receiver) -> None:
    done = _run(EXAMPLES[1], tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "succeeded exporting: True"
    assert sorted(s.name for s in receiver.spans) == ["chat scripted", "invoke_agent greeter"]
    assert {s.resource["service.name"] for s in receiver.spans} == {"orchestrion"}
    assert any(p.metric == "orchestrion.runs" for p in receiver.points)


def test_the_logging_example_writes_what_the_page_says(tmp_path: Path) -> None:
    done = _run(EXAMPLES[2], tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "hello" and record["attempt"] == 2
    assert (record["run_id"], record["conversation_id"]) == ("run_42", "conv_7")
    assert "text" not in record and "private words" not in line
