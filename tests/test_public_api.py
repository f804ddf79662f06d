"""What `orchestrion` exports: the names production code needs, the test doubles' home,
one BusyPolicy type, typed breaker settings checked when they are given."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

import orchestrion
import orchestrion.testing
from orchestrion.engine import agent as agent_module
from orchestrion.resilience.breaker import CircuitBreaker
from orchestrion.resilience.registry import _RESERVED_BREAKER_KEYS
from orchestrion.server.schemas import PostMessage
from orchestrion.store import base as store_base

PRODUCTION_NAMES = {
    # the runtime, agents, tools
    "Orchestrion", "Agent", "tool", "Tool", "ToolContext", "TurnResult", "ConversationInfo",
    "ConversationState", "BusyPolicy", "RunStatus", "RetryPolicy", "HedgePolicy",
    "BreakerSettings", "ArgumentPolicy", "Message", "ToolCall", "Span", "render_text",
    # models
    "Model", "resolve_model", "OpenAIModel", "AnthropicModel", "ModelConfigError",
    # typed events
    "Event", "BaseEvent", "parse_event", "TextDelta", "TextReset", "RunQueued", "RunStarted",
    "RunResumed", "RunFinished", "RunError", "StateChanged", "StepStarted", "StepFinished",
    "ToolCallStarted", "ToolCallFinished", "ToolProgress", "ModelResponded",
    "ArgumentsRepaired", "ArgumentsInvalid", "OutputValidated", "OutputInvalid",
    "RetryAttempted", "RetryScheduled", "RetryGaveUp", "RetryBudgetRefused",
    "BreakerChanged", "BreakerRejected", "FallbackUsed", "FallbackFailed", "HedgeFired",
    "HedgeWon", "OtherEvent",
    # errors users catch
    "OrchestrionError", "NotFound", "ConversationBusy", "ConversationEnded",
    "ConversationClosed", "ConversationExpired", "StoreError", "StoreBusy", "NoStore",
    "LeaseLost", "RunCancelled", "DeadlineExceeded", "NonDeterminismError",
    "IllegalTransition", "TooManySteps", "InvalidOutput", "StepFailed", "ProviderError",
    "RateLimited", "ProviderUnavailable", "ProviderTimeout", "ProviderConnectionError",
    "MalformedResponse", "BadRequest", "AuthenticationFailed", "ContextLengthExceeded",
    "BreakerOpen", "RetryBudgetExhausted",
}  # fmt: skip
TEST_DOUBLES = {"ScriptedModel", "say", "call", "calls", "raw_call"}


def test_the_public_names_import_and_all_lists_them() -> None:
    exported = set(orchestrion.__all__)
    assert PRODUCTION_NAMES <= exported, PRODUCTION_NAMES - exported
    assert TEST_DOUBLES <= exported  # kept for compatibility
    assert len(orchestrion.__all__) == len(exported)  # no name twice
    for name in orchestrion.__all__:
        assert getattr(orchestrion, name) is not None, name
    # Every public name the package defines is in __all__ (nothing exported by accident).
    defined = {
        n for n, v in vars(orchestrion).items()
        if not n.startswith("_") and not inspect.ismodule(v)
    }  # fmt: skip
    assert defined == exported, defined ^ exported


def test_star_import_gives_exactly_all(tmp_path: Path) -> None:
    code = "from orchestrion import *\nprint(sorted(k for k in dir() if not k.startswith('_')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, check=True)  # fmt: skip
    assert done.stdout.strip() == str(sorted(orchestrion.__all__))


def test_errors_are_orchestrion_errors() -> None:
    for name in orchestrion.__all__:
        value = getattr(orchestrion, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, orchestrion.OrchestrionError), name
    assert issubclass(orchestrion.ConversationClosed, orchestrion.ConversationEnded)
    assert issubclass(orchestrion.ConversationExpired, orchestrion.ConversationEnded)
    assert issubclass(orchestrion.NoStore, orchestrion.StoreError)


def test_test_doubles_live_in_orchestrion_testing() -> None:
    assert set(orchestrion.testing.__all__) >= TEST_DOUBLES
    for name in TEST_DOUBLES:
        assert getattr(orchestrion, name) is getattr(orchestrion.testing, name)
    model = orchestrion.testing.ScriptedModel([orchestrion.testing.say("hi")])
    assert isinstance(model, orchestrion.Model)


def test_one_busy_policy_type_everywhere() -> None:
    assert get_args(orchestrion.BusyPolicy) == ("enqueue", "reject", "interrupt")
    assert orchestrion.BusyPolicy is store_base.BusyPolicy is agent_module.BusyPolicy
    field = orchestrion.Agent.__dataclass_fields__["busy_policy"]
    assert field.type in ("BusyPolicy", orchestrion.BusyPolicy)
    schema = PostMessage.model_json_schema()
    options = schema["properties"]["busy_policy"]["anyOf"][0]["enum"]
    assert tuple(options) == get_args(orchestrion.BusyPolicy)


# ---- breaker settings ---------------------------------------------------------------------


def test_breaker_settings_are_the_circuit_breakers_settings_with_its_defaults() -> None:
    params = {
        p.name: p.default
        for p in inspect.signature(CircuitBreaker).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RESERVED_BREAKER_KEYS
    }
    fields = orchestrion.BreakerSettings.model_fields
    assert set(fields) == set(params)
    for name, default in params.items():
        assert fields[name].default == default, name


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"minimum_call": 5}, "unknown setting(s) minimum_call (did you mean minimum_calls?)"),
        ({"minimum_calls": 0}, "minimum_calls=0: Input should be greater than or equal to 1"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold=1.5: Input should be less"),
        ({"window": "sliding"}, "window='sliding': Input should be 'count' or 'time'"),
        ({"wait_in_open": "soon"}, "wait_in_open='soon': Input should be a valid number"),
        (["minimum_calls"], "must be a BreakerSettings or a mapping of its fields, not list"),
    ],
)
def test_bad_breaker_settings_fail_at_once_in_one_line_and_create_nothing(
    tmp_path: Path, given: object, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        orchestrion.Orchestrion(f"sqlite:///{tmp_path / 'x.db'}", breaker_settings=given)  # type: ignore[arg-type]
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("breaker_settings")
    assert list(tmp_path.iterdir()) == []


def test_breaker_settings_reach_every_breaker_as_typed_or_as_a_mapping(tmp_path: Path) -> None:
    typed = orchestrion.BreakerSettings(minimum_calls=7, wait_in_open=15, slow_call_duration=None)
    for given in (typed, {"minimum_calls": 7, "wait_in_open": 15, "slow_call_duration": None}):
        orx = orchestrion.Orchestrion(f"sqlite:///{tmp_path / 'x.db'}", breaker_settings=given)
        breaker = orx.worker.breakers.get("model:any")
        assert (breaker.minimum_calls, breaker.wait_in_open) == (7, 15)
        assert breaker.slow_call_duration == float("inf")
        assert breaker.failure_rate_threshold == 0.5  # not given: the default
    assert typed.breaker_kwargs() == {
        "minimum_calls": 7,
        "wait_in_open": 15.0,
        "slow_call_duration": None,
    }
