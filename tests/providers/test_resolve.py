from __future__ import annotations

import subprocess
import sys

import pytest

from orchestrion.chaos.testing import chaos_log
from orchestrion.models import Message, ModelRequest, ScriptedModel, complete
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.openai import OpenAIModel
from orchestrion.models.resolve import ModelConfigError, resolve_model


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def test_openai_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1/")
    model = resolve_model("openai:llama3.2")
    assert isinstance(model, OpenAIModel)
    assert model.name == "openai:llama3.2" and model.model == "llama3.2"
    assert model.http.base_url == "http://localhost:11434/v1"
    assert model.http.headers["authorization"] == "Bearer sk-env"


def test_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://env")
    model = resolve_model("anthropic:claude-x", api_key="arg-key", base_url="http://arg", name="n")
    assert isinstance(model, AnthropicModel)
    assert model.http.headers["x-api-key"] == "arg-key"
    assert model.http.base_url == "http://arg"
    assert model.name == "n"


def test_default_base_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    assert resolve_model("openai:m").http.base_url == "https://api.openai.com/v1"  # type: ignore[attr-defined]
    assert resolve_model("anthropic:m").http.base_url == "https://api.anthropic.com"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "spec,var", [("openai:gpt-x", "OPENAI_API_KEY"), ("anthropic:claude-x", "ANTHROPIC_API_KEY")]
)
def test_a_missing_key_names_the_variable(spec: str, var: str) -> None:
    with pytest.raises(ModelConfigError, match=var):
        resolve_model(spec)


@pytest.mark.parametrize("spec", ["mistral:large", "openai", "openai:", ""])
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ModelConfigError):
        resolve_model(spec, api_key="k")


async def test_scripted_needs_no_key() -> None:
    model = resolve_model("scripted")
    assert isinstance(model, ScriptedModel)
    response = await complete(model, ModelRequest(messages=(Message.user("hi"),)))
    assert response.message.content and response.finish_reason == "stop"
    echo = resolve_model("scripted:echo")
    response = await complete(echo, ModelRequest(messages=(Message.user("ping"),)))
    assert response.message.content == "You said: ping"


async def test_resolved_model_talks_to_the_chaos_server(
    chaos_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "anything")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{chaos_url}/v1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "anything")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", chaos_url)
    before = chaos_log(chaos_url)["calls"]
    for spec in ("openai:m", "anthropic:m"):
        response = await complete(resolve_model(spec), ModelRequest(messages=(Message.user("hi"),)))
        assert response.finish_reason == "stop"
    assert chaos_log(chaos_url)["calls"] == before + 2


def test_models_do_not_import_the_chaos_tooling() -> None:
    # Production code (every model, and resolving each kind) loads nothing from chaos/.
    code = (
        "import sys\n"
        "import orchestrion.models.anthropic, orchestrion.models.openai\n"
        "from orchestrion.models.resolve import resolve_model\n"
        "resolve_model('scripted'); resolve_model('scripted:echo')\n"
        "resolve_model('openai:x', api_key='k'); resolve_model('anthropic:x', api_key='k')\n"
        "print(sorted(m for m in sys.modules if m.startswith('orchestrion.chaos')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
