"""The README's quickstart is the file examples/quickstart.py, and it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_quickstart_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks, "README has no python example"
    assert blocks[0] == (ROOT / "examples" / "quickstart.py").read_text()
    assert len(blocks[0].strip().splitlines()) < 30


def test_quickstart_runs_and_sends_the_email_once(tmp_path: Path) -> None:
    script = ROOT / "examples" / "quickstart.py"
    first = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "Done: Ada has mail." in first.stdout
    assert "execute_tool send_email" in first.stdout
    assert "result: sent" in first.stdout
    assert (tmp_path / "quickstart.db").exists()


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "    ./scripts/demo\n" in readme and "    ./scripts/test\n" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
