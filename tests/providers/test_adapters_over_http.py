"""The OpenAI and Anthropic adapters against the chaos server over loopback HTTP: every
fault ends in the right normalised error or a correct result, and a broken stream never
yields a FinishDelta."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from orchestrion.chaos.scripts import text_script
from orchestrion.chaos.server import corrupt_arguments
from orchestrion.chaos.testing import chaos_log, running_chaos_server
from orchestrion.errors import (
    ContextLengthExceeded,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from orchestrion.models import (
    FinishDelta,
    Message,
    Model,
    ModelDelta,
    ModelRequest,
    ResponseAssembler,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    complete,
)
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.openai import OpenAIModel

PROTOCOLS = ["openai", "anthropic"]
WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
DEFAULT_ARGS = '{"city": "example city"}'
TEXT = text_script(ModelRequest(messages=(Message.user("x"),))).text


def make(url: str, protocol: str, fault: str | None = None) -> OpenAIModel | AnthropicModel:
    headers = {"x-chaos-fault": fault} if fault else {}
    if protocol == "openai":
        return OpenAIModel("gpt-test", api_key="k", base_url=f"{url}/v1", headers=headers)
    return AnthropicModel("claude-test", api_key="k", base_url=url, headers=headers)


def ask(tools: bool = False, **kw: Any) -> ModelRequest:
    return ModelRequest(
        messages=(Message.system("Be brief."), Message.user("Weather in Paris?")),
        tools=(WEATHER,) if tools else (),
        **kw,
    )


async def collect(model: Model, request: ModelRequest) -> tuple[list[ModelDelta], Exception | None]:
    deltas: list[ModelDelta] = []
    try:
        async for delta in model.stream(request):
            deltas.append(delta)
    except ProviderError as exc:
        return deltas, exc
    finally:
        await model.aclose()  # type: ignore[attr-defined]
    return deltas, None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_answer_with_usage_model_and_request_id(chaos_url: str, protocol: str) -> None:
    deltas, error = await collect(make(chaos_url, protocol), ask())
    assert error is None
    finishes = [d for d in deltas if isinstance(d, FinishDelta)]
    assert len(finishes) == 1 and deltas[-1] is finishes[0]
    finish = finishes[0]
    assert finish.reason == "stop"
    assert finish.usage.input_tokens > 0 and finish.usage.output_tokens > 0
    assert finish.model in ("gpt-test", "claude-test")
    assert finish.request_id is not None and finish.request_id.startswith("req_chaos")
    text = "".join(getattr(d, "text", "") for d in deltas)
    assert text == TEXT
    assert len([d for d in deltas if d.kind == "text"]) > 1  # really streamed


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_call_deltas_reassemble_exactly(protocol: str) -> None:
    args_a = '{"query": "naïve café", "limit": 10, "nested": {"k": [1, 2, 3]}}'
    args_b = '{"path": "/tmp/x\\ny", "mode": "w"}'
    plan = {
        "replies": [
            {
                "text": "Running two tools.",
                "calls": [
                    {"name": "search", "arguments": args_a},
                    {"name": "write_file", "arguments": args_b},
                ],
            }
        ],
        "chunk_size": 3,
    }
    with running_chaos_server(plan) as url:
        model = make(url, protocol)
        deltas, error = await collect(model, ask(tools=True))
    assert error is None
    pieces = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert len(pieces) > 10  # many small argument deltas, not one blob
    assert {d.index for d in pieces} == {0, 1}
    assembler = ResponseAssembler()
    for d in deltas:
        assembler.add(d)
    response = assembler.response()
    assert response.finish_reason == "tool_calls"
    assert response.message.content == "Running two tools."
    assert [(c.name, c.arguments) for c in response.message.tool_calls] == [
        ("search", args_a),
        ("write_file", args_b),
    ]
    ids = [c.id for c in response.message.tool_calls]
    assert len(set(ids)) == 2 and all(ids)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_history_with_tool_results_is_sent_in_the_providers_shape(
    chaos_url: str, protocol: str
) -> None:
    call = ToolCall(id="call_7", name="get_weather", arguments='{"city": "Paris"}')
    request = ModelRequest(
        messages=(
            Message.system("Be brief."),
            Message.user("Weather in Paris?"),
            Message.assistant("Checking.", (call,)),
            Message.tool_result(call, "sunny, 21C"),
        ),
        tools=(WEATHER,),
    )
    # The default script answers a tool result by quoting it: proof the server parsed the
    # adapter's encoding of the assistant call and the tool result.
    response = await complete(make(chaos_url, protocol), request)
    assert response.finish_reason == "stop"
    assert response.message.content == "Done. The tool answered: sunny, 21C"


ERRORS: list[tuple[str, type[ProviderError], int | None]] = [
    ("rate_limit; retry_after=2", RateLimited, 429),
    ("server_error", ProviderUnavailable, 500),
    ("unavailable", ProviderUnavailable, 503),
    ("overloaded", ProviderUnavailable, 529),
    ("connection_reset", ProviderConnectionError, None),
    ("empty_body", MalformedResponse, 200),
    ("malformed_json", MalformedResponse, 200),
    ("truncated_stream", MalformedResponse, 200),
    ("truncated_stream; after_chunks=100", MalformedResponse, 200),
    ("midstream_error", ProviderUnavailable, None),
    ("context_length", ContextLengthExceeded, 400),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault,expected,status", ERRORS)
async def test_faults_end_in_the_normalised_error_without_a_finish(
    chaos_url: str, protocol: str, fault: str, expected: type[ProviderError], status: int | None
) -> None:
    before = chaos_log(chaos_url)["calls"]
    deltas, error = await collect(make(chaos_url, protocol, fault), ask(tools=True))
    assert type(error) is expected, (fault, error)
    assert not any(isinstance(d, FinishDelta) for d in deltas)
    assert error.provider == protocol
    if status is not None and status != 200:
        assert error.status_code == status
    # one HTTP call: the adapter never retries on its own
    assert chaos_log(chaos_url)["calls"] == before + 1
    if status not in (None, 200):
        assert error.request_id is not None and error.request_id.startswith("req_chaos")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_overloaded_error_event_after_200(chaos_url: str, protocol: str) -> None:
    fault = "midstream_error; after_chunks=5; error_type=overloaded_error"
    deltas, error = await collect(make(chaos_url, protocol, fault), ask())
    assert isinstance(error, ProviderUnavailable)
    assert error.error_type == "overloaded_error" and error.status_code == 529
    assert error.retryable
    assert deltas and not any(isinstance(d, FinishDelta) for d in deltas)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "fault,expected",
    [
        ("rate_limit; retry_after=2", 2.0),
        ("rate_limit; retry_after=0.25; retry_after_format=ms", 0.25),
        ("rate_limit; retry_after=1.5; retry_after_format=both", 1.5),  # ms wins
    ],
)
async def test_retry_after_is_read_from_either_header(
    chaos_url: str, protocol: str, fault: str, expected: float
) -> None:
    _, error = await collect(make(chaos_url, protocol, fault), ask())
    assert isinstance(error, RateLimited)
    assert error.retry_after == expected
    remaining = (
        "x-ratelimit-remaining-requests"
        if protocol == "openai"
        else "anthropic-ratelimit-requests-remaining"
    )
    assert error.headers[remaining] == "0"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retry_after_as_an_http_date(chaos_url: str, protocol: str) -> None:
    fault = "rate_limit; retry_after=5; retry_after_format=date"
    _, error = await collect(make(chaos_url, protocol, fault), ask())
    assert isinstance(error, RateLimited)
    # an HTTP date has one-second resolution and the clock moved on: a range, not a value
    assert error.retry_after is not None and 0.0 <= error.retry_after <= 6.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", ["hang", "stall", "stall; after_chunks=4"])
async def test_hangs_end_at_the_deadline(chaos_url: str, protocol: str, fault: str) -> None:
    request = ask(deadline=time.time() + 0.4)
    deltas, error = await collect(make(chaos_url, protocol, fault), request)
    assert isinstance(error, ProviderTimeout)
    assert not any(isinstance(d, FinishDelta) for d in deltas)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_passed_deadline_sends_nothing(chaos_url: str, protocol: str) -> None:
    before = chaos_log(chaos_url)["calls"]
    _, error = await collect(make(chaos_url, protocol), ask(deadline=time.time() - 1))
    assert isinstance(error, ProviderTimeout)
    assert chaos_log(chaos_url)["calls"] == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "variant", ["trailing_comma", "single_quotes", "code_fence", "double_encoded", "truncated"]
)
async def test_malformed_tool_arguments_arrive_verbatim(
    chaos_url: str, protocol: str, variant: str
) -> None:
    fault = f"malformed_tool_args; variant={variant}"
    response = await complete(make(chaos_url, protocol, fault), ask(tools=True))
    assert response.finish_reason == "tool_calls"
    (call,) = response.message.tool_calls
    assert call.name == "get_weather"
    assert call.arguments == corrupt_arguments(DEFAULT_ARGS, variant)
    try:
        parsed = json.loads(call.arguments)
    except ValueError:
        parsed = None
    assert not isinstance(parsed, dict)  # broken for real: repair is not the adapter's job


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_invented_tool_name_is_passed_through(chaos_url: str, protocol: str) -> None:
    fault = "invented_tool; tool_name=delete_everything"
    response = await complete(make(chaos_url, protocol, fault), ask(tools=True))
    (call,) = response.message.tool_calls
    assert call.name == "delete_everything"
    assert call.arguments == DEFAULT_ARGS


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("tools", [False, True])
async def test_max_tokens_cut_finishes_with_length(
    chaos_url: str, protocol: str, tools: bool
) -> None:
    deltas, error = await collect(make(chaos_url, protocol, "max_tokens"), ask(tools=tools))
    assert error is None
    assert isinstance(deltas[-1], FinishDelta) and deltas[-1].reason == "length"
    assembler = ResponseAssembler()
    for d in deltas:
        assembler.add(d)
    response = assembler.response()
    assert response.finish_reason == "length"
    if tools:
        (call,) = response.message.tool_calls
        assert DEFAULT_ARGS.startswith(call.arguments) and call.arguments != DEFAULT_ARGS
    else:
        assert response.message.content and TEXT.startswith(response.message.content)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_request_max_tokens_is_honoured_with_length(chaos_url: str, protocol: str) -> None:
    response = await complete(make(chaos_url, protocol), ask(max_tokens=3))
    assert response.finish_reason == "length"
    assert response.message.content == TEXT[:12]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_latency_still_answers(chaos_url: str, protocol: str) -> None:
    response = await complete(make(chaos_url, protocol, "latency; delay=0.05"), ask())
    assert response.message.content == TEXT
    entry = chaos_log(chaos_url)["entries"][-1]
    assert entry["fault"] == "latency" and entry["detail"]["delay"] == 0.05


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_planned_faults_then_success_over_one_server(protocol: str) -> None:
    plan = {
        "faults": [{"fault": "unavailable", "at": [1]}, {"fault": "truncated_stream", "at": [2]}]
    }
    with running_chaos_server(plan) as url:
        outcomes = []
        for _ in range(3):
            _, error = await collect(make(url, protocol), ask())
            outcomes.append(type(error).__name__ if error else "ok")
        assert outcomes == ["ProviderUnavailable", "MalformedResponse", "ok"]
        assert [e["fault"] for e in chaos_log(url)["entries"]] == [
            "unavailable",
            "truncated_stream",
            None,
        ]
