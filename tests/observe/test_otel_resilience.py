"""Real provider adapters against the chaos LLM server (the OpenAI and Anthropic wire
protocols over loopback HTTP): provider, model and server attributes, retries as span
events, failures as error.type, and the metrics that count them."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrion import Agent, Orchestrion, RetryPolicy
from orchestrion.chaos.testing import running_chaos_server, set_chaos_plan
from orchestrion.models.resolve import resolve_model
from tests.observe.agents import ANSWER, lookup
from tests.observe.otlp import ReceivedSpan, Receiver
from tests.observe.support import Providers, durable_result, points

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02, jitter=False)
REPLIES = [
    {"text": "Checking.", "calls": [{"name": "lookup", "arguments": '{"city": "Paris"}'}]},
    {"text": ANSWER},
]
API_KEY = "sk-test-0123456789abcdefghij"


def _by_seq(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    steps = [s for s in spans if "orchestrion.step.seq" in s.attributes]
    return sorted(steps, key=lambda s: s.attributes["orchestrion.step.seq"])


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_provider_calls_carry_server_attributes_retries_and_errors(
    protocol: str, db_path: Path, receiver: Receiver, providers: Providers
) -> None:
    plan = {
        "replies": REPLIES,
        "faults": [{"fault": "rate_limit", "at": [1], "retry_after": 0.01}],
    }
    with running_chaos_server(plan) as url:
        base_url = f"{url}/v1" if protocol == "openai" else url
        model = resolve_model(f"{protocol}:model-x", base_url=base_url, api_key=API_KEY)
        agent = Agent("wire", model=model, tools=[lookup], retry=FAST)
        async with Orchestrion(
            f"sqlite:///{db_path}",
            agents=[agent],
            tracer_provider=providers.tracer,
            meter_provider=providers.meter,
        ) as orx:
            sent = await orx.send("wire", "Weather in Paris?")
            good = await durable_result(orx, sent.run_id)
            # Then the provider fails for good: every call a 500.
            set_chaos_plan(url, {"replies": REPLIES, "faults": [{"fault": "server_error"}]})
            sent = await orx.send("wire", "And tomorrow?")
            bad = await durable_result(orx, sent.run_id)
    providers.shutdown()
    assert good.status == "succeeded" and bad.status == "failed"
    port = urlsplit(url).port

    good_spans = receiver.trace(await _trace_id(db_path, good.run_id))
    first_chat, tool, last_chat = _by_seq(good_spans)
    for chat in (first_chat, last_chat):
        a = chat.attributes
        assert chat.name == "chat model-x"
        assert a["gen_ai.provider.name"] == protocol
        assert a["gen_ai.request.model"] == "model-x"
        assert a["orchestrion.model"] == f"{protocol}:model-x"
        assert (a["server.address"], a["server.port"]) == ("127.0.0.1", port)
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    # The 429 and the wait it asked for are events of the model call that met them.
    retried = [e for e in first_chat.events if e.name.startswith("retry.")]
    assert [e.name for e in retried] == ["retry.attempt", "retry.wait", "retry.attempt"]
    assert retried[0].attributes["outcome"] == "error"
    assert retried[0].attributes["error_type"] == "RateLimited"
    assert retried[1].attributes["reason"] == "retry_after"
    assert retried[2].attributes["outcome"] == "success"
    assert not [e for e in last_chat.events if e.name.startswith("retry.")]
    assert tool.name == "execute_tool lookup"

    bad_spans = receiver.trace(await _trace_id(db_path, bad.run_id))
    (failed_chat,) = _by_seq(bad_spans)
    root = next(s for s in bad_spans if s.name == "invoke_agent wire")
    assert failed_chat.status_code == root.status_code == 2
    assert failed_chat.attributes["error.type"] == "ProviderUnavailable"
    assert root.attributes["error.type"] and root.attributes["orchestrion.run.status"] == "failed"
    assert [e.name for e in failed_chat.events if e.name.startswith("retry.")] == [
        "retry.attempt",
        "retry.wait",
        "retry.attempt",
        "retry.giveup",
    ]
    # Never the API key, anywhere.
    for span in receiver.spans:
        assert API_KEY not in json.dumps([span.attributes, [e.attributes for e in span.events]])

    pipeline = f"model:{protocol}:model-x"
    retries = points(receiver, "orchestrion.step.retries", **{"orchestrion.pipeline": pipeline})
    assert sum(p.value for p in retries) == 2  # the 429, then the first 500
    (failed,) = points(receiver, "orchestrion.runs", **{"orchestrion.run.status": "failed"})
    assert failed.value == 1
    durations = "gen_ai.client.operation.duration"
    (errors,) = points(receiver, durations, **{"error.type": "ProviderUnavailable"})
    assert errors.count == 1 and errors.attributes["server.port"] == port


async def _trace_id(db_path: Path, run_id: str) -> str:
    async with Orchestrion(f"sqlite:///{db_path}") as orx:
        return (await orx.store.get_run(run_id)).trace_id
