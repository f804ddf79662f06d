"""The official SDKs, as clients of the chaos server over loopback HTTP, must parse its
bodies, streams and errors: the server is only useful if it speaks the real protocols."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from orchestrion.chaos.scripts import text_script
from orchestrion.chaos.testing import running_chaos_server
from orchestrion.models.messages import Message, ModelRequest

WEATHER_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    }
]
WEATHER_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": WEATHER_OPENAI[0]["function"]["parameters"],
    }
]
EXPECTED_ARGS = {"city": "example city", "days": 1}
TEXT = text_script(ModelRequest(messages=(Message.user("x"),))).text
USER = [{"role": "user", "content": "What's the weather in Paris?"}]


def oai(url: str, fault: str | None = None) -> openai.OpenAI:
    headers = {"x-chaos-fault": fault} if fault else None
    return openai.OpenAI(
        base_url=f"{url}/v1", api_key="test", max_retries=0, default_headers=headers
    )


def ant(url: str, fault: str | None = None) -> anthropic.Anthropic:
    headers = {"x-chaos-fault": fault} if fault else None
    return anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, default_headers=headers)


# ---- OpenAI --------------------------------------------------------------------------


def test_openai_sdk_parses_a_text_completion(chaos_url: str) -> None:
    result = oai(chaos_url).chat.completions.create(model="gpt-test", messages=USER)
    choice = result.choices[0]
    assert choice.message.content is not None and choice.message.content.startswith("Hello")
    assert choice.finish_reason == "stop"
    assert result.model == "gpt-test"
    assert result.usage is not None and result.usage.completion_tokens > 0


def test_openai_sdk_parses_tool_calls(chaos_url: str) -> None:
    result = oai(chaos_url).chat.completions.create(
        model="gpt-test",
        messages=USER,
        tools=WEATHER_OPENAI,
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == EXPECTED_ARGS


def test_openai_sdk_streams_tool_call_deltas_and_usage(chaos_url: str) -> None:
    stream = oai(chaos_url).chat.completions.create(
        model="gpt-test",
        messages=USER,
        tools=WEATHER_OPENAI,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, args, names, finish, usage = "", "", [], None, None
    pieces = 0
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                assert tc.index == 0
                pieces += 1
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
            finish = choice.finish_reason or finish
    assert text == "Let me check that."
    assert names == ["get_weather"]
    assert json.loads(args) == EXPECTED_ARGS
    assert pieces > 2  # the arguments really arrived in several deltas
    assert finish == "tool_calls"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_sdk_stream_helper_accumulates_the_final_completion(chaos_url: str) -> None:
    with oai(chaos_url).chat.completions.stream(
        model="gpt-test",
        messages=USER,
        tools=WEATHER_OPENAI,
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == EXPECTED_ARGS


@pytest.mark.parametrize("form,header", [("seconds", "retry-after"), ("ms", "retry-after-ms")])
def test_openai_sdk_sees_a_429_with_retry_after(chaos_url: str, form: str, header: str) -> None:
    client = oai(chaos_url, f"rate_limit; retry_after=2; retry_after_format={form}")
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 429
    assert info.value.response.headers[header] in ("2", "2000")
    assert info.value.request_id is not None and info.value.request_id.startswith("req_chaos")


@pytest.mark.parametrize(
    "fault,status", [("server_error", 500), ("unavailable", 503), ("overloaded", 529)]
)
def test_openai_sdk_sees_server_errors(chaos_url: str, fault: str, status: int) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai(chaos_url, fault).chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == status


def test_openai_sdk_sees_context_length_code(chaos_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(chaos_url, "context_length").chat.completions.create(model="m", messages=USER)
    assert info.value.code == "context_length_exceeded"


def test_openai_sdk_raises_on_an_error_object_mid_stream(chaos_url: str) -> None:
    stream = oai(chaos_url, "midstream_error; after_chunks=2").chat.completions.create(
        model="m", messages=USER, stream=True
    )
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2
    assert "Overloaded" in info.value.message


def test_openai_sdk_rejects_an_invalid_request_as_400(chaos_url: str) -> None:
    with pytest.raises(openai.BadRequestError):
        oai(chaos_url).chat.completions.create(model="m", messages=[])


# ---- Anthropic -------------------------------------------------------------------------


def test_anthropic_sdk_parses_a_text_message(chaos_url: str) -> None:
    msg = ant(chaos_url).messages.create(model="claude-test", max_tokens=200, messages=USER)
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text == TEXT
    assert msg.model == "claude-test"
    assert msg.usage.output_tokens > 0


def test_anthropic_sdk_parses_tool_use(chaos_url: str) -> None:
    msg = ant(chaos_url).messages.create(
        model="claude-test", max_tokens=200, messages=USER, tools=WEATHER_ANTHROPIC
    )
    assert msg.stop_reason == "tool_use"
    blocks = [b for b in msg.content if b.type == "tool_use"]
    assert len(blocks) == 1
    assert blocks[0].name == "get_weather" and blocks[0].input == EXPECTED_ARGS


def test_anthropic_sdk_stream_helper_accumulates_tool_input(chaos_url: str) -> None:
    with ant(chaos_url).messages.stream(
        model="claude-test", max_tokens=200, messages=USER, tools=WEATHER_ANTHROPIC
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check that."
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.input == EXPECTED_ARGS
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 1  # message_delta's count replaced the start's


def test_anthropic_sdk_raw_event_sequence(chaos_url: str) -> None:
    events = ant(chaos_url).messages.create(
        model="claude-test",
        max_tokens=200,
        messages=USER,
        stream=True,
        tools=WEATHER_ANTHROPIC,
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2


def test_anthropic_sdk_sees_a_429_and_a_529(chaos_url: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as limited:
        ant(chaos_url, "rate_limit; retry_after=3").messages.create(
            model="m", max_tokens=10, messages=USER
        )
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        ant(chaos_url, "overloaded").messages.create(model="m", max_tokens=10, messages=USER)
    assert overloaded.value.status_code == 529
    body: Any = overloaded.value.body
    assert body["error"]["type"] == "overloaded_error"


def test_anthropic_sdk_raises_on_an_error_event_after_200(chaos_url: str) -> None:
    stream = ant(chaos_url, "midstream_error; after_chunks=3").messages.create(
        model="m", max_tokens=10, messages=USER, stream=True
    )
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start" and "message_stop" not in seen
    assert "overloaded_error" in str(info.value)


def test_anthropic_sdk_sees_prompt_too_long(chaos_url: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        ant(chaos_url, "context_length").messages.create(model="m", max_tokens=10, messages=USER)
    assert "prompt is too long" in str(info.value)


def test_sdks_parse_scripted_replies_with_parallel_calls() -> None:
    plan = {
        "replies": [
            {
                "text": "Two at once.",
                "calls": [
                    {"name": "a", "arguments": '{"x": 1}'},
                    {"name": "b", "arguments": '{"y": "é"}'},
                ],
            }
        ],
        "chunk_size": 2,
    }
    with running_chaos_server(plan) as url:
        result = oai(url).chat.completions.create(model="m", messages=USER)
        calls = result.choices[0].message.tool_calls or []
        assert [(c.function.name, c.function.arguments) for c in calls] == [
            ("a", '{"x": 1}'),
            ("b", '{"y": "é"}'),
        ]
        with ant(url).messages.stream(model="m", max_tokens=50, messages=USER) as stream:
            final = stream.get_final_message()
        inputs = [b.input for b in final.content if b.type == "tool_use"]
        assert inputs == [{"x": 1}, {"y": "é"}]
