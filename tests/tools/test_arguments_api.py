"""The argument pipeline's API around the corpus: re-ask budget, exhaustion, structured
output, tool-name handling and what the trace receives."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from orchestrion.models.messages import ToolCall
from orchestrion.tools import ToolRegistry, tool
from orchestrion.tools.arguments import (
    UNKNOWN_TOOL_KEY,
    ArgumentPolicy,
    ArgumentResult,
    ReaskBudget,
    exhausted_outcome,
    prepare_arguments,
    prepare_output,
    render_exhausted,
)


def call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id="call_1", name=name, arguments=arguments)


# ---- re-ask budget --------------------------------------------------------------------


def test_budget_is_bounded_per_tool() -> None:
    budget = ReaskBudget(ArgumentPolicy(max_reasks_per_tool=2, max_reasks_per_turn=10))
    assert [budget.allow("a") for _ in range(3)] == [True, True, False]
    assert budget.allow("b")  # another tool has its own allowance
    assert budget.used("a") == 2 and budget.used("b") == 1 and budget.used() == 3


def test_budget_is_bounded_per_turn() -> None:
    budget = ReaskBudget(ArgumentPolicy(max_reasks_per_tool=5, max_reasks_per_turn=3))
    assert [budget.allow(name) for name in "abcd"] == [True, True, True, False]
    assert budget.used("d") == 0  # a refused re-ask consumes nothing


def test_zero_reasks_means_straight_to_exhaustion() -> None:
    budget = ReaskBudget(ArgumentPolicy(max_reasks_per_tool=0))
    assert not budget.allow("a")


def test_budget_decisions_replay_identically(registry: ToolRegistry) -> None:
    calls = [
        call("book_slot", '{"customer_id": "x", "when": "now"}'),
        call("get_weather", '{"city": "Paris"}'),
        call("book_slot", "{}"),
        call("pyhton", "{}"),
        call("brwoser", "{}"),
        call("book_slot", "null"),
        call("get_weather", "{"),
    ]

    def decisions() -> list[str]:
        budget = ReaskBudget(ArgumentPolicy(max_reasks_per_tool=2, max_reasks_per_turn=4))
        return [budget.decide(prepare_arguments(c, registry)) for c in calls]

    first = decisions()
    assert first == decisions()
    assert first == ["reask", "execute", "reask", "reask", "reask", "exhausted", "exhausted"]


def test_invented_tool_names_share_one_allowance(registry: ToolRegistry) -> None:
    budget = ReaskBudget(ArgumentPolicy(max_reasks_per_tool=1, max_reasks_per_turn=10))
    first = prepare_arguments(call("python", "{}"), registry)
    second = prepare_arguments(call("bash", "{}"), registry)
    assert first.budget_key == second.budget_key == UNKNOWN_TOOL_KEY
    assert budget.decide(first) == "reask"
    assert budget.decide(second) == "exhausted"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_reasks_per_tool": -1}, {"max_reasks_per_turn": -2}, {"on_exhausted": "raise"}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ArgumentPolicy(**kwargs)  # type: ignore[arg-type]


# ---- exhaustion -----------------------------------------------------------------------


def test_explain_mode_gives_the_model_a_structured_failure(registry: ToolRegistry) -> None:
    result = prepare_arguments(call("book_slot", '{"customer_id": "abc", "when": "x"}'), registry)
    outcome = exhausted_outcome(result, ArgumentPolicy(on_exhausted="explain"))
    assert outcome.mode == "explain" and outcome.user_message is None
    assert outcome.tool_result == render_exhausted(result)
    assert "'book_slot'" in outcome.tool_result
    assert "field 'customer_id': expected an integer, got \"abc\"" in outcome.tool_result
    assert "not executed" in outcome.tool_result
    assert "tell the user" in outcome.tool_result


def test_message_mode_ends_with_the_configured_text(registry: ToolRegistry) -> None:
    result = prepare_arguments(call("nope", "{}"), registry)
    policy = ArgumentPolicy(on_exhausted="message", exhausted_message="Try again later.")
    outcome = exhausted_outcome(result, policy)
    assert outcome.mode == "message"
    assert outcome.user_message == "Try again later."
    # The call is still answered, so the history stays well-formed for the provider.
    assert "There is no tool 'nope'" in outcome.tool_result


def test_exhausted_truncated_call_says_so(registry: ToolRegistry) -> None:
    result = prepare_arguments(call("write_file", '{"path": "a"'), registry, truncated=True)
    text = render_exhausted(result)
    assert "cut off at the token limit" in text and "'write_file'" in text


# ---- structured final answers ---------------------------------------------------------


class Report(BaseModel):
    title: str
    score: int


def test_output_goes_through_the_same_repairs() -> None:
    text = "Here is the report:\n```json\n{'title': 'Q3', 'score': '7',}\n```"
    result = prepare_output(text, Report)
    assert result.status == "repaired"
    assert isinstance(result.arguments, Report)
    assert result.arguments == Report(title="Q3", score=7)
    assert "removed markdown code fence" in result.repairs
    assert result.tool_name == "Report"


def test_output_error_names_the_answer_not_a_tool() -> None:
    result = prepare_output('{"title": "Q3"}', Report)
    assert result.status == "invalid"
    assert result.error == (
        "Final answer (Report): field 'score': required but missing (an integer). "
        "Answer again with one JSON object that matches the required schema."
    )


def test_truncated_output_is_refused_even_when_complete() -> None:
    result = prepare_output('{"title": "Q3", "score": 7}', Report, truncated=True)
    assert result.status == "truncated" and not result.executable


def test_output_prose_only_is_refused() -> None:
    result = prepare_output("The report looks good overall.", Report)
    assert result.status == "invalid" and result.error is not None
    assert "no JSON object found" in result.error


# ---- names, wrappers, trace payload ---------------------------------------------------


def test_case_folding_only_when_unambiguous() -> None:
    @tool(name="Lookup")
    def lookup_a(q: str) -> str:
        return q

    @tool(name="lookup")
    def lookup_b(q: str) -> str:
        return q

    reg = ToolRegistry([lookup_a, lookup_b])
    assert prepare_arguments(call("LOOKUP", '{"q": "x"}'), reg).status == "unknown_tool"
    assert prepare_arguments(call("lookup", '{"q": "x"}'), reg).status == "ok"


def test_a_real_parameter_named_arguments_is_not_unwrapped() -> None:
    @tool
    def run_cmd(arguments: dict[str, str]) -> str:
        return ""

    reg = ToolRegistry([run_cmd])
    result = prepare_arguments(call("run_cmd", '{"arguments": {"a": "b"}}'), reg)
    assert result.status == "ok"
    assert result.arguments is not None and result.arguments.model_dump() == {
        "arguments": {"a": "b"}
    }


def test_unknown_tool_with_no_tools() -> None:
    result = prepare_arguments(call("python", "{}"), ToolRegistry())
    assert result.status == "unknown_tool"
    assert result.error == "There is no tool 'python'. No tools are available."
    assert result.suggestion is None


def test_unknown_tool_suggestion_is_recorded(registry: ToolRegistry) -> None:
    result = prepare_arguments(call("pyhton", "{}"), registry)
    assert result.suggestion == "python_exec"
    assert result.error is not None and result.error.endswith("Did you mean 'python_exec'?")


def test_event_payload_keeps_raw_output(registry: ToolRegistry) -> None:
    raw = "```json\n{'city': 'Paris'}\n```"
    result = prepare_arguments(call("functions.get_weather", raw), registry)
    payload = json.loads(json.dumps(result.event_payload()))
    assert payload["raw"] == raw
    assert payload["status"] == "repaired"
    assert payload["tool_name"] == "get_weather"
    assert payload["requested_name"] == "functions.get_weather"
    assert payload["repairs"][0] == "read tool name 'functions.get_weather' as 'get_weather'"


def test_internal_failure_degrades_to_a_reask() -> None:
    class Exploding(BaseModel):
        x: int

        @classmethod
        def model_validate_json(cls, *args: object, **kwargs: object) -> Exploding:
            raise RuntimeError("boom")

    result = prepare_output('{"x": 1}', Exploding)
    assert isinstance(result, ArgumentResult)
    assert result.status == "invalid" and not result.executable
    assert result.error is not None and "could not be processed (RuntimeError)" in result.error
