"""`Agent(name, model="openai:...")`: a model spec string is resolved at construction like
`--model`; an unusable spec or a value that is not a model fails there, clearly, instead
of failing every turn later. A turn runs on a spec-built model against the chaos server
(the real OpenAI wire protocol over HTTP), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel
from orchestrion.chaos.testing import running_chaos_server
from orchestrion.models.openai import OpenAIModel
from orchestrion.models.resolve import ModelConfigError
from tests.store.pg import any_store_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with any_store_url(request.param, tmp_path) as url:
        yield url


def test_a_spec_string_becomes_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    agent = Agent("a", model="openai:gpt-4o-mini")
    assert isinstance(agent.model, OpenAIModel)
    assert agent.model.name == "openai:gpt-4o-mini"
    assert isinstance(Agent("b", model="scripted").model, ScriptedModel)


def test_an_unusable_spec_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelConfigError, match="OPENAI_API_KEY is not set"):
        Agent("a", model="openai:gpt-4o-mini")
    with pytest.raises(ModelConfigError, match="unknown model provider 'gpt-4o-mini'"):
        Agent("a", model="gpt-4o-mini")
    with pytest.raises(TypeError, match="model must be a Model or a spec string"):
        Agent("a", model=42)  # type: ignore[arg-type]


async def test_a_turn_on_a_spec_built_model(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_chaos_server("none") as base_url:
        monkeypatch.setenv("OPENAI_API_KEY", "any")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{base_url}/v1")
        agent = Agent("chatty", model="openai:chaos-model")
        async with Orchestrion(store, agents=[agent]) as orx:
            run_id = (await orx.send("chatty", "Hello?", conversation="c1")).run_id
        async with Orchestrion(store) as orx:  # the turn's durable outcome
            result = await orx.result(run_id)
            history = await orx.history("c1")
    assert result.status == "succeeded", result
    assert result.answer.startswith("Hello from the orchestrion chaos server")
    assert [m.role for m in history] == ["user", "assistant"]
