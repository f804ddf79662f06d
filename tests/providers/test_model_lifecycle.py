"""Tool-call ids are unique like a provider's (the scripted model, and the assembler when a
provider sends none), and models that hold HTTP clients close them (`aclose`)."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from orchestrion.models import (
    FinishDelta,
    Message,
    ModelRequest,
    ResponseAssembler,
    ScriptedModel,
    ToolCallDelta,
    call,
    calls,
    close_models,
    complete,
    say,
)
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.openai import OpenAIModel

ID = re.compile(r"call_[0-9a-f]{24}")


async def test_scripted_calls_get_unique_ids_in_a_turn_and_across_turns() -> None:
    model = ScriptedModel([calls(call("a", x=1), call("b", x=2), call("a", x=3)), say("done")])
    request = ModelRequest(messages=(Message.user("go"),))
    first = (await complete(model, request)).message.tool_calls
    again = (await complete(model, request)).message.tool_calls  # the same reply, later
    ids = [c.id for c in (*first, *again)]
    assert all(ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 6
    # The reply itself still depends on the request alone.
    assert [(c.name, c.arguments) for c in first] == [(c.name, c.arguments) for c in again]


def test_assembler_gives_calls_without_an_id_distinct_ids() -> None:
    def assemble() -> list[str]:
        assembler = ResponseAssembler()
        for index in range(3):
            assembler.add(ToolCallDelta(index=index, name="t", arguments="{}"))
        assembler.add(FinishDelta(reason="tool_calls"))
        return [c.id for c in assembler.response().message.tool_calls]

    ids = assemble() + assemble()
    assert all(ID.fullmatch(i) for i in ids) and len(set(ids)) == 6


async def test_http_models_close_their_client_idempotently(chaos_url: str) -> None:
    model = OpenAIModel("gpt-test", api_key="k", base_url=f"{chaos_url}/v1")
    request = ModelRequest(messages=(Message.user("hi"),))
    assert (await complete(model, request)).message.content
    client = model.http._client
    assert client is not None and not client.is_closed
    await model.aclose()
    assert client.is_closed
    await model.aclose()  # again: nothing to do
    assert (await complete(model, request)).message.content  # usable: a new client
    assert model.http._client is not None and model.http._client is not client
    await model.aclose()


async def test_a_client_given_to_a_model_is_left_to_its_owner(chaos_url: str) -> None:
    async with httpx.AsyncClient() as mine:
        model = AnthropicModel("claude-test", api_key="k", base_url=chaos_url, client=mine)
        request = ModelRequest(messages=(Message.user("hi"),))
        assert (await complete(model, request)).message.content
        await model.aclose()
        assert not mine.is_closed
        assert (await complete(model, request)).message.content


class Broken:
    name = "broken"

    async def aclose(self) -> None:
        raise OSError("socket already gone")


async def test_close_models_closes_each_once_and_survives_a_failure(
    chaos_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    openai = OpenAIModel("gpt-test", api_key="k", base_url=f"{chaos_url}/v1")
    anthropic = AnthropicModel("claude-test", api_key="k", base_url=chaos_url)
    request = ModelRequest(messages=(Message.user("hi"),))
    for model in (openai, anthropic):
        await complete(model, request)
    clients = [openai.http._client, anthropic.http._client]
    models: list[object] = [openai, Broken(), anthropic, openai, ScriptedModel([say("x")])]
    models.append(object())  # not a model with resources: skipped
    with caplog.at_level(logging.WARNING, logger="orchestrion.models"):
        await close_models(models)
    assert all(c is not None and c.is_closed for c in clients)
    assert "closing model broken failed: socket already gone" in caplog.text
