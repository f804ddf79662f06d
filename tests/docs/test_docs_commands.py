"""Every command and snippet in README.md and docs/ runs as written.

- Every Python block runs (a block that defines `test_*` functions runs under pytest);
  the one that needs a live service is run by its own test against one.
- Every `orchestrion` command parses: its options and subcommands exist (`--help`).
- docs/operations.md is a walkthrough: its console commands run for real, in order, in
  an empty folder; each must succeed, or fail with exactly the error the page shows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.cli.helpers import ORCHESTRION, env
from tests.docs.snippets import (
    ROOT,
    Block,
    Command,
    all_orchestrion_commands,
    console_commands,
    python_blocks,
)

# Blocks that need more than a scratch folder, and the test that runs each one.
RUN_ELSEWHERE = {
    "docs/server.md": "tests/server/test_docs_client.py",  # an HTTP client: needs `serve`
}
# What some examples print, checked beyond their exit status.
# What a doc's python block prints: doc -> {text that picks the block: expected lines}.
EXPECTED_OUTPUT = {
    "docs/architecture.md": {
        "open_ticket": (
            "history: ['user', 'assistant', 'tool', 'assistant']",
            "execute_tool open_ticket ok",
            " 8  ToolCallStarted  step.started   execute_tool open_ticket",
        ),
        "case ToolCallStarted": ('-> lookup({"city": "Paris"})', "Sunny in Paris.", "succeeded"),
    },
    "docs/guarantees.md": {
        "epochs": ("epochs: 1 -> 2", "c2: succeeded", "c2: CLOSED 2 messages"),
    },
}
# The provider examples read these variables (any value will do offline).
PROVIDER_KEYS = {"OPENAI_API_KEY": "sk-example", "ANTHROPIC_API_KEY": "sk-ant-example"}


def _python_id(block: Block) -> str:
    return f"{block.doc}:{block.line}"


@pytest.mark.parametrize("block", python_blocks(), ids=_python_id)
def test_python_snippet_runs(block: Block, tmp_path: Path) -> None:
    if block.doc in RUN_ELSEWHERE:
        elsewhere = ROOT / RUN_ELSEWHERE[block.doc]
        assert block.doc in elsewhere.read_text(), f"{elsewhere} does not run {block.doc}"
        return
    script = tmp_path / "test_snippet.py"
    script.write_text(block.text + "\n")
    if re.search(r"^def test_", block.text, re.MULTILINE):
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    else:
        argv = [sys.executable, str(script)]
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env(**PROVIDER_KEYS)
    )
    assert done.returncode == 0, f"{_python_id(block)} failed:\n{done.stdout}\n{done.stderr}"
    for marker, lines in EXPECTED_OUTPUT.get(block.doc, {}).items():
        for expected in lines if marker in block.text else ():
            assert expected in done.stdout, (expected, done.stdout)


def test_the_documented_examples_are_found() -> None:
    docs = {b.doc for b in python_blocks()}
    assert {"README.md", "docs/architecture.md", "docs/guarantees.md", "docs/chaos.md"} <= docs
    commands = {c.doc for c in all_orchestrion_commands()}
    assert {"README.md", "docs/operations.md", "docs/postgres.md", "docs/server.md"} <= commands


@pytest.mark.parametrize("command", all_orchestrion_commands(), ids=lambda c: c.id)
def test_documented_command_parses(command: Command, tmp_path: Path) -> None:
    args = command.orchestrion_args()
    assert args is not None
    done = subprocess.run(
        [str(ORCHESTRION), *args, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )
    assert done.returncode == 0, f"{command.id}: {command.text}\n{done.stderr}"
    assert "Usage: orchestrion" in done.stdout, done.stdout
    assert list(tmp_path.iterdir()) == []  # parsing created nothing


# ---- docs/operations.md, for real ---------------------------------------------------------

def _left_out(command: Command) -> bool:
    """Commands the walkthrough does not run: they run until stopped (a worker without
    --drain, serve), or are benchmarks (bench/ has its own tests; their options are
    checked above)."""
    args = command.orchestrion_args()
    if args is None:
        return False
    words = [a for a in args if not a.startswith("-")]
    # The first word that is not an option or a global option's value: the subcommand.
    values = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--store", "--durability")}
    subcommand = next((w for w in words if w not in values), "")
    if subcommand == "worker":
        return "--drain" not in args
    return subcommand in ("serve", "chaos", "bench")


def _script_line(n: int, command: Command) -> str | None:
    """The bash line that runs one documented command, recording its streams and status;
    None when the walkthrough leaves it out."""
    text = command.text.strip()
    if _left_out(command):
        return None
    if text.startswith("cat ") and command.output:  # the page shows a file: write it
        name = text.split()[1]
        content = "\n".join(command.output) + "\n"
        return f"cat > {name} <<'ORX_EOF'\n{content}ORX_EOF"
    if text.endswith("&"):  # a background job (killed by a later command)
        return text
    return f"{{ {text}\n}} > out.{n} 2> err.{n}; echo $? > rc.{n}"


def test_operations_walkthrough_runs_as_written(tmp_path: Path) -> None:
    commands = console_commands(ROOT / "docs" / "operations.md")
    assert len(commands) > 30
    lines = ["set -u", f'export PATH="{ORCHESTRION.parent}:$PATH"']
    checked: dict[int, Command] = {}
    for n, command in enumerate(commands):
        line = _script_line(n, command)
        if line is None:
            continue
        lines.append(line)
        if "> out." in line:
            checked[n] = command
    lines.append("wait")
    script = tmp_path / "walkthrough.sh"
    script.write_text("\n".join(lines) + "\n")
    folder = tmp_path / "scratch"
    folder.mkdir()
    done = subprocess.run(
        ["bash", str(script)], cwd=folder, capture_output=True, text=True, timeout=600, env=env()
    )
    assert done.returncode == 0, done.stderr
    assert len(checked) > 25
    for n, command in checked.items():
        rc = int((folder / f"rc.{n}").read_text())
        out = (folder / f"out.{n}").read_text()
        err = (folder / f"err.{n}").read_text()
        where = f"{command.id}: $ {command.text}\nstdout:\n{out}\nstderr:\n{err}"
        assert "Traceback" not in err, where
        shown_error = [line for line in command.output if line.startswith("Error: ")]
        if shown_error:
            assert rc == 1, where
            assert err.strip().splitlines()[-1] == shown_error[0], where
            continue
        if command.orchestrion_args() is None:
            continue  # a shell helper (sqlite3, echo, mkdir, kill): its status is its own
        assert rc == 0, where
        # A one-line result the page shows (no ids or timings in it) is what it prints.
        if len(command.output) == 1 and not re.search(r"run_|\d\.\d", command.output[0]):
            assert command.output[0] in out.splitlines(), where
