"""No command prints a traceback for a user's mistake or an environment fault: one line on
stderr, exit code 1 (2 for a misused option); `--debug` shows the traceback. Every case
runs the real `orchestrion` executable."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import ORCHESTRION, assert_clean_error, cli, env, json_lines


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        ("scripted:foo", ("--model", "unknown script 'foo'", "default, echo, text")),
        ("nosuch:model", ("--model", "unknown model provider 'nosuch'")),
        ("openai:gpt-4o-mini", ("--model", "OPENAI_API_KEY is not set")),
        ("anthropic", ("--model", "names no model")),
    ],
)
def test_a_bad_model_spec(tmp_path: Path, model: str, needles: tuple[str, ...]) -> None:
    environ = env()
    environ.pop("OPENAI_API_KEY", None)
    proc = cli("demo", "--model", model, cwd=tmp_path, environ=environ, check=False)
    assert_clean_error(proc, *needles, code=2)
    assert list(tmp_path.iterdir()) == []  # refused before any store was touched


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("demo", "--json"), ("--json applies to --outbox only",)),
        (("demo", "--outbox", "--message", "hi"), ("--outbox", "drop --message")),
        (
            ("demo", "--outbox", "--latency", "1", "--no-trace"),
            ("drop --latency, --no-trace",),
        ),
        (("demo", "--latency", "-1"), ("--latency", "-1")),
        (("demo", "--message", ""), ("--message", "is empty")),
        (("demo", "--message", "   "), ("--message", "is empty")),
        (("demo", "--conversation", ""), ("--conversation", "is empty")),
        (("--store", "", "runs"), ("--store", "is empty")),
        (("worker", "--concurrency", "0"), ("--concurrency",)),
        (("bench", "arguments", "--store", "sqlite:///x.db"), ("measures no store",)),
        (("--store", "sqlite:///a.db", "bench", "steps", "--store", "sqlite:///b.db"), ("twice",)),
    ],
)
def test_options_out_of_range_or_ignored_are_refused(
    tmp_path: Path, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    proc = cli(*args, cwd=tmp_path, check=False)
    assert_clean_error(proc, *needles, code=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "right"),
    [
        ("sqlite:x.db", "sqlite:///x.db"),
        ("sqlite://x.db", "sqlite:///x.db"),
        ("sqlite:/tmp/x.db", "sqlite:////tmp/x.db"),
        ("postgres:app", None),
        ("mysql://h/db", None),
    ],
)
@pytest.mark.parametrize("command", [("runs",), ("demo", "--no-trace"), ("worker", "--drain")])
def test_a_misspelled_store_url_creates_nothing(
    tmp_path: Path, url: str, right: str | None, command: tuple[str, ...]
) -> None:
    proc = cli(*command, store=url, cwd=tmp_path, check=False)
    line = assert_clean_error(proc, url, code=1)
    assert (right or "sqlite:///") in line
    assert list(tmp_path.iterdir()) == []  # no file named "sqlite:x.db", nothing else


def _limit_file_size(limit: int) -> None:
    """In the child: writes that would grow a file past `limit` bytes fail with EFBIG,
    as on a full disk (the signal that would kill the process is ignored)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _full_disk_cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ORCHESTRION), "--store", f"sqlite:///{store}", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
        preexec_fn=lambda: _limit_file_size(store.stat().st_size + 16_384),
    )


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    store = tmp_path / "x.db"
    for n in range(3):
        cli("demo", "--conversation", f"c{n}", "--no-trace", store=store)
    before = json_lines(cli("runs", "--json", store=store).stdout)
    failed = 0
    for args in (
        ("demo", "--conversation", "full", "--latency", "0"),
        ("worker", "--drain"),
        ("demo", "--conversation", "c1", "--no-trace"),
    ):
        proc = _full_disk_cli(store, *args)
        if proc.returncode == 0:
            continue  # it fitted in the space left: nothing to report
        failed += 1
        line = assert_clean_error(proc, code=1)
        assert line.startswith("Error: ")
        assert "--debug" not in line or "unexpected" in line
    assert failed, "the file-size limit never hit: the test did not simulate a full disk"
    # With room again, everything committed before is there, and the store works.
    after = json_lines(cli("runs", "--json", store=store).stdout)
    assert {r["id"] for r in before} <= {r["id"] for r in after}
    assert "All set" in cli("demo", "--conversation", "again", "--no-trace", store=store).stdout


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    plain = cli("--store", "sqlite:x.db", "runs", cwd=tmp_path, check=False)
    assert_clean_error(plain, "sqlite:///x.db", code=1)
    debug = cli("--debug", "--store", "sqlite:x.db", "runs", cwd=tmp_path, check=False)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "StoreError" in debug.stderr
    environ = env(ORCHESTRION_DEBUG="1")
    again = cli("--store", "sqlite:x.db", "runs", cwd=tmp_path, environ=environ, check=False)
    assert "Traceback" in again.stderr


def test_an_unknown_benchmark_store_is_one_line(tmp_path: Path) -> None:
    proc = cli("--store", "mysql://h/db", "bench", "steps", "--quick", cwd=tmp_path, check=False)
    assert_clean_error(proc, "mysql://h/db", code=1)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"faults": [{"fault": "nope"}]}', "faults[0].fault: unknown fault 'nope'"),
        ('{"faults": [', "not valid JSON (line 1, column 13"),
    ],
)
def test_a_bad_chaos_plan_is_one_line(tmp_path: Path, content: str, needle: str) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    proc = cli("chaos", "serve", "--port", "0", "--plan", str(plan), check=False)
    line = assert_clean_error(proc, needle, code=2)
    assert line.startswith("Error: Invalid value for --plan: ")
    assert "errors.pydantic.dev" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 3  # usage, hint, error


def test_chaos_serve_options_out_of_range(tmp_path: Path) -> None:
    for args in (("--chunk-delay", "-1"), ("--port", "70000")):
        proc = cli("chaos", "serve", *args, check=False)
        assert_clean_error(proc, args[0], code=2)


def test_error_descriptions_are_one_line() -> None:
    import logging

    from orchestrion.cli_common import OneLineLogFormatter, describe_error
    from orchestrion.errors import StoreError

    two_lines = StoreError("x.db: disk full\nsecond line")
    assert describe_error(two_lines) == "x.db: disk full; second line"
    assert describe_error(ExceptionGroup("tasks", [StoreError("gone")])) == "gone"
    full = OSError(28, "No space left on device", "/data/x.db")
    assert describe_error(full) == "No space left on device: /data/x.db"
    bug = describe_error(KeyError("k"))
    assert bug.startswith("unexpected KeyError: 'k'") and "--debug" in bug
    try:
        raise RuntimeError("boom\ndetail")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "task\nfailed", (), None)
        record.exc_info = sys.exc_info()
    line = OneLineLogFormatter("%(levelname)s %(message)s").format(record)
    assert line == "ERROR task failed (RuntimeError: boom; detail)"
