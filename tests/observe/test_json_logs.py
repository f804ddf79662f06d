"""JSON log lines: `orchestrion --log-format json` as a real process, and the formatter
the library offers (ids of the run and step being executed, no keys, no content)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrion import Orchestrion
from orchestrion.observe.logs import (
    JsonFormatter,
    bind_run_context,
    bind_span,
    configure_logging,
    redact,
)
from orchestrion.store.base import EventRecord, RunRecord
from tests.observe.agents import weather_agent

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "orchestrion")


async def _submit(store: str, count: int) -> list[RunRecord]:
    async with Orchestrion(store, agents=[weather_agent()]) as orx:
        return [await orx.submit("weather", f"weather {i}?") for i in range(count)]


async def _events(store: str, run_id: str) -> list[EventRecord]:
    async with Orchestrion(store) as orx:
        return await orx.store.read_events(run_id)


def _worker(store: str, *, capture: bool) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    if capture:
        env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    done = subprocess.run(
        [CLI, "--log-format", "json", "-v", "--store", store, "worker", "--drain",
         "--app", "tests.observe.agents:weather"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is one JSON object


@pytest.mark.parametrize("capture", [False, True], ids=["default", "capture"])
def test_worker_logs_are_json_lines_naming_run_conversation_trace_and_step(
    store: str, capture: bool
) -> None:
    runs = asyncio.run(_submit(store, 3))
    records = _worker(store, capture=capture)
    tool_lines = [r for r in records if r["message"] == "looking up the weather"]
    assert len(tool_lines) == len(runs)
    for run in runs:
        (line,) = [r for r in tool_lines if r.get("run_id") == run.id]
        events = asyncio.run(_events(store, run.id))
        (tool_step,) = [
            e for e in events if e.type == "step.finished" and e.name == "execute_tool lookup"
        ]
        assert line["conversation_id"] == run.conversation_id
        assert line["trace_id"] == run.trace_id
        assert line["span_id"] == tool_step.span_id  # the step the line was written in
        assert line["level"] == "warning" and line["logger"] == "tests.observe.tool"
        assert line["city_length"] == 5
        assert ("text" in line) is capture  # the tool's content, only when opted in
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message"}


def test_the_formatter_masks_keys_and_drops_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    out = io.StringIO()
    handler = configure_logging("json", level=logging.INFO, stream=out)
    log = logging.getLogger("tests.observe.json")
    try:
        log.info("no run here")
        with bind_run_context("run_1", conversation_id="conv_1", trace_id="a" * 32):
            log.info(
                "calling with key sk-live-0123456789abcdef and Authorization: Bearer tok_98765432",
                extra={
                    "content": "what the user said",
                    "api_key": "plain-key-value",
                    "headers": {"x-api-key": "k-123", "accept": "json"},
                    "attempt": 2,
                },
            )
            with bind_span("b" * 16):
                try:
                    raise ValueError("boom with api_key=hunter2hunter2")
                except ValueError:
                    log.exception("step failed")
    finally:
        logging.getLogger().removeHandler(handler)
    first, keyed, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert "run_id" not in first and first["message"] == "no run here"
    assert keyed["run_id"] == "run_1" and keyed["conversation_id"] == "conv_1"
    assert keyed["trace_id"] == "a" * 32 and len(keyed["span_id"]) == 16  # the run's span
    text = json.dumps(keyed)
    for secret in ("sk-live-0123456789abcdef", "tok_98765432", "plain-key-value", "k-123"):
        assert secret not in text
    assert "what the user said" not in text and "content" not in keyed
    assert keyed["headers"] == {"x-api-key": "[redacted]", "accept": "json"}
    assert keyed["attempt"] == 2
    assert failed["span_id"] == "b" * 16 and failed["level"] == "error"
    assert "ValueError" in failed["exception"] and "hunter2" not in failed["exception"]

    # Opted in, content is kept (keys never are).
    formatter = JsonFormatter(capture_content=True)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.content = "what the user said"
    record.password = "pw"
    kept = json.loads(formatter.format(record))
    assert kept["content"] == "what the user said" and kept["password"] == "[redacted]"


def test_redact_leaves_ordinary_text_alone() -> None:
    text = "run run_abc finished in 12 ms; tokens=34; task-queue sk"
    assert redact(text) == text
    with pytest.raises(ValueError, match="not one of"):
        configure_logging("yaml")  # type: ignore[arg-type]
