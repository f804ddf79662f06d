"""The Python examples in docs/architecture.md and docs/guarantees.md run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("architecture.md", "guarantees.md")


def _examples() -> list[tuple[str, int, str]]:
    found = []
    for name in DOCS:
        text = (ROOT / "docs" / name).read_text()
        for index, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.DOTALL)):
            found.append((name, index, block))
    return found


def test_each_doc_has_an_example() -> None:
    assert {name for name, _, _ in _examples()} == set(DOCS)


@pytest.mark.parametrize(
    ("doc", "index", "code"), _examples(), ids=[f"{d}#{i}" for d, i, _ in _examples()]
)
def test_doc_example_runs(doc: str, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{doc} example {index} failed:\n{done.stdout}\n{done.stderr}"
    if doc == "architecture.md":
        assert "history: ['user', 'assistant', 'tool', 'assistant']" in done.stdout
        assert "execute_tool open_ticket ok" in done.stdout
    if doc == "guarantees.md":
        assert "epochs: 1 -> 2" in done.stdout
        assert "c2: succeeded" in done.stdout
