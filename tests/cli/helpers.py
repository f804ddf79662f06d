"""Running the real `orchestrion` console script as a subprocess, and reading its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ORCHESTRION = Path(sys.executable).parent / "orchestrion"
REPO = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    values = {
        k: v for k, v in os.environ.items() if k not in ("ORCHESTRION_STORE", "ORCHESTRION_DEBUG")
    }
    values["PYTHONUNBUFFERED"] = "1"
    values.update(extra)
    return values


def cli(
    *args: str,
    store: str | Path | None = None,
    cwd: Path | None = None,
    environ: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`orchestrion [--store STORE] ARGS...`; with check, it must succeed without a traceback.
    `store` is a URL, or a Path taken as a SQLite file."""
    argv = [str(ORCHESTRION)]
    if store is not None:
        argv += ["--store", f"sqlite:///{store}" if isinstance(store, Path) else store]
    argv += list(args)
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ if environ is not None else env(),
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, (
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_python(code: str, cwd: Path, **extra_env: str) -> str:
    """Run a snippet in a fresh interpreter; it must succeed. Returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env(**extra_env),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def assert_clean_error(
    proc: subprocess.CompletedProcess[str], *needles: str, code: int | None = None
) -> str:
    """The command failed with a message (no traceback) containing every needle; the
    message's last line is returned."""
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    for stream in (proc.stderr, proc.stdout):
        assert "Traceback" not in stream, stream
        assert 'File "' not in stream, stream
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def run_id_from_demo(stdout: str) -> str:
    match = re.search(r"\brun (run_\w+) · conversation (\S+) · (\w+)", stdout)
    assert match, stdout
    return match.group(1)
