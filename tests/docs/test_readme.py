"""The README's quickstart is the file examples/quickstart.py, and it runs."""

from __future__ import annotations

import json
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
    runs = [
        subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
        for _ in range(2)
    ]  # fmt: skip
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "execute_tool send_email" in run.stdout
        assert "result: sent" in run.stdout  # the second run shows the recorded turn
        assert run.stdout.count("invoke_agent mailer") == 1
    assert runs[0].stdout.startswith("Done: Ada has mail.")  # streamed as it happened
    assert not runs[1].stdout.startswith("Done: Ada has mail.")  # no second turn
    assert (tmp_path / "quickstart.db").exists()
    outbox = subprocess.run(
        [str(Path(sys.executable).parent / "orchestrion"), "--store", "sqlite:///quickstart.db",
         "demo", "--outbox", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    emails = [json.loads(line) for line in outbox.stdout.splitlines()]
    assert [(e["kind"], e["payload"]["to"]) for e in emails] == [("email", "ada@example.com")]


KILL_AFTER_THE_EMAIL = """
import os, runpy, signal, sys
from orchestrion.tools.context import ToolContext

record = ToolContext.record_effect

async def record_then_die(self, *args, **kwargs):
    await record(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the email went out; its step never completed

ToolContext.record_effect = record_then_die
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def test_quickstart_killed_after_the_email_resumes_without_sending_it_again(
    tmp_path: Path,
) -> None:
    script = str(ROOT / "examples" / "quickstart.py")
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_THE_EMAIL, script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    again = subprocess.run([sys.executable, script], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resume: epoch 2" in again.stdout
    assert "result: already sent" in again.stdout  # re-executed under the same key
    outbox = subprocess.run(
        [str(Path(sys.executable).parent / "orchestrion"), "--store", "sqlite:///quickstart.db",
         "demo", "--outbox", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert [json.loads(line)["kind"] for line in outbox.stdout.splitlines()] == ["email"]


def test_readme_names_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "    ./scripts/demo\n" in readme and "    ./scripts/test\n" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
