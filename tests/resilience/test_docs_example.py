import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"


def test_the_documented_example_runs() -> None:
    match = re.search(r"```python\n(import asyncio.*?)```", DOC.read_text(), re.S)
    assert match is not None
    out = subprocess.run(
        [sys.executable, "-c", match.group(1)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("retry.wait") == 2
    assert out.stdout.strip().endswith("answer after 3 attempts")
