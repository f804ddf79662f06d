"""W3C traceparent: on POST /v1/conversations/{id}/messages (real uvicorn, exporting by
the OTEL_* environment), given to `submit`, or the caller's current span: the run joins
the caller's trace, its span a child of the caller's."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrion import Orchestrion
from orchestrion.observe.events import run_span_id
from orchestrion.observe.traceparent import parse_traceparent
from tests.observe.agents import weather_agent
from tests.observe.otlp import Receiver
from tests.server.helpers import chat_agent, finished_run, new_conversation, start_server


def _ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def test_a_traceparent_header_parents_the_runs_trace(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    live = start_server(tmp_path / "service.db", [chat_agent()], default_agent="chat")
    try:
        client = live.client()
        conversation = new_conversation(client)
        trace_id, parent_id = _ids()
        posted = client.post(
            f"/v1/conversations/{conversation}/messages",
            json={"message": "hello", "stream": False},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert posted.status_code == 202, posted.text
        joined = finished_run(client, posted.headers["x-run-id"])
        # Invalid headers are ignored (W3C): the turn runs, in a trace of its own.
        ignored = []
        for bad in (f"00-{trace_id}-{'0' * 16}-01", "not a traceparent", f"ff-{trace_id}-x-01"):
            answer = client.post(
                f"/v1/conversations/{conversation}/messages",
                json={"message": "again", "stream": False},
                headers={"traceparent": bad},
            )
            assert answer.status_code == 202, answer.text
            ignored.append(finished_run(client, answer.headers["x-run-id"]))
    finally:
        live.stop()  # closes the runtime: its spans are flushed

    assert joined["status"] == "succeeded" and joined["trace_id"] == trace_id
    spans = receiver.trace(trace_id)
    root = next(s for s in spans if s.name == "invoke_agent chat")
    assert root.parent_span_id == parent_id and root.span_id == run_span_id(joined["id"])
    assert [s.name for s in spans if s.parent_span_id == root.span_id] == ["chat scripted"]
    for run in ignored:
        assert run["status"] == "succeeded" and run["trace_id"] != trace_id
        (own,) = [s for s in receiver.trace(run["trace_id"]) if s.name == "invoke_agent chat"]
        assert own.parent_span_id is None


async def test_submit_takes_a_traceparent_or_the_callers_current_span(db_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id, parent_id = _ids()
    async with Orchestrion(
        f"sqlite:///{db_path}", agents=[weather_agent()], tracer_provider=provider
    ) as orx:
        explicit = await orx.submit("weather", "hi", traceparent=f"00-{trace_id}-{parent_id}-01")
        assert explicit.trace_id == trace_id
        with pytest.raises(ValueError, match="not a W3C traceparent"):
            await orx.submit("weather", "hi", traceparent="00-zz-01")
        # Inside the application's own span, a submitted run is that span's child.
        with provider.get_tracer("app").start_as_current_span("handle request") as outer:
            ambient = await orx.submit("weather", "hi")
        outer_context = outer.get_span_context()
        assert ambient.trace_id == f"{outer_context.trace_id:032x}"
        unparented = await orx.submit("weather", "hi")
        for run in (explicit, ambient, unparented):
            orx.start(run.id)
    spans = memory.get_finished_spans()
    roots = {f"{s.context.span_id:016x}": s for s in spans if s.name.startswith("invoke_agent")}
    assert roots[run_span_id(explicit.id)].parent is not None
    assert f"{roots[run_span_id(explicit.id)].parent.span_id:016x}" == parent_id
    assert roots[run_span_id(ambient.id)].parent.span_id == outer_context.span_id
    assert roots[run_span_id(unparented.id)].parent is None
    assert f"{roots[run_span_id(unparented.id)].context.trace_id:032x}" == unparented.trace_id


def test_traceparent_parsing_follows_the_w3c_rules() -> None:
    trace_id, span_id = _ids()
    parsed = parse_traceparent(f" 00-{trace_id.upper()}-{span_id}-03 ")
    assert parsed is not None and (parsed.trace_id, parsed.span_id) == (trace_id, span_id)
    assert parsed.sampled and parsed.header == f"00-{trace_id}-{span_id}-01"
    unsampled = parse_traceparent(f"00-{trace_id}-{span_id}-00")
    assert unsampled is not None and not unsampled.sampled
    # A later version may carry more fields; version 00 may not.
    assert parse_traceparent(f"01-{trace_id}-{span_id}-01-extra") is not None
    for bad in (
        None,
        "",
        f"00-{trace_id}-{span_id}-01-extra",
        f"ff-{trace_id}-{span_id}-01",
        f"00-{'0' * 32}-{span_id}-01",
        f"00-{trace_id}-{'0' * 16}-01",
        f"00-{trace_id[:-1]}-{span_id}-01",
        f"00-{trace_id}-{span_id}-1",
        f"00-{trace_id}-{span_id}-0g",
    ):
        assert parse_traceparent(bad) is None, bad
