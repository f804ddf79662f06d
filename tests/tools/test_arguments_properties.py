"""Properties of the argument pipeline over generated inputs: it never raises, and it never
hands back arguments that fail the tool's schema or come from a cut-off output."""

from __future__ import annotations

import json
from typing import Any

from argument_tools import Filters, make_registry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrion.models.messages import ToolCall
from orchestrion.tools.arguments import ArgumentResult, prepare_arguments, prepare_output

REGISTRY = make_registry()
TOOL_NAMES = REGISTRY.names
# No deadline: timing is not what these tests assert, and the machine is shared.
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Arguments shaped like the tools' parameters, right or wrong.
plausible = st.fixed_dictionaries(
    {},
    optional={
        "city": json_values, "days": json_values, "customer_id": json_values,
        "when": json_values, "note": json_values, "domain": json_values,
        "query": json_values, "filters": json_values, "enabled": json_values,
        "mode": st.sampled_from(["fast", "slow", "FAST"]) | json_values,
    },
)  # fmt: skip

NOISE = ['"', "'", "{", "}", "[", "]", ",", ":", "\\", "\n", "None", "```", "<|im_end|>", " "]


@st.composite
def mangled(draw: st.DrawFn) -> str:
    """A JSON text put through the kinds of damage models do to it."""
    text = json.dumps(draw(plausible), indent=draw(st.sampled_from([None, 1])))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["cut", "insert", "delete", "quote", "wrap", "double", "dup"]))
        pos = draw(st.integers(0, len(text)))
        if op == "cut":
            text = text[:pos]
        elif op == "insert":
            text = text[:pos] + draw(st.sampled_from(NOISE)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif op == "quote":
            text = text.replace('"', "'")
        elif op == "wrap":
            text = draw(
                st.sampled_from(["```json\n{}\n```", "Here: {} ok", "<|python_tag|>{}"])
            ).format(text)
        elif op == "double":
            text = json.dumps(text)
        else:
            text = text + text
    return text


def check_invariants(result: ArgumentResult, model: type[BaseModel] | None) -> None:
    assert result.status in ("ok", "repaired", "invalid", "truncated", "unknown_tool")
    assert result.executable == (result.status in ("ok", "repaired"))
    if result.executable:
        assert model is not None and isinstance(result.arguments, model)
        assert result.error is None
        # The validated arguments satisfy the schema on their own: re-validating their
        # dump (in pydantic's strict mode, so no coercion can hide a wrong type) succeeds.
        assert result.arguments is not None
        model.model_validate(result.arguments.model_dump(), strict=True)
        assert (result.status == "repaired") == bool(result.repairs)
    else:
        assert result.arguments is None
        assert result.error
        assert "could not be processed" not in result.error


def run(name: str, text: str, truncated: bool = False) -> ArgumentResult:
    result = prepare_arguments(
        ToolCall(id="c", name=name, arguments=text), REGISTRY, truncated=truncated
    )
    tool = REGISTRY.get(result.tool_name)
    check_invariants(result, tool.args_model if tool else None)
    return result


@PROPS
@given(name=st.sampled_from(TOOL_NAMES), text=st.text(max_size=80))
def test_any_text_is_handled(name: str, text: str) -> None:
    run(name, text)


@PROPS
@given(name=st.sampled_from(TOOL_NAMES), text=mangled())
def test_mangled_json_is_handled(name: str, text: str) -> None:
    run(name, text)


@PROPS
@given(name=st.sampled_from([*TOOL_NAMES, "python", "x"]), text=mangled() | st.text(max_size=40))
def test_truncated_output_is_never_executable(name: str, text: str) -> None:
    assert not run(name, text, truncated=True).executable


@PROPS
@given(args=plausible.filter(bool), data=st.data())
def test_a_cut_off_object_is_never_executable(args: dict[str, Any], data: st.DataObject) -> None:
    # Even when the provider does not say so, a strict prefix of an object is refused.
    text = json.dumps(args, separators=(",", ":"))
    cut = data.draw(st.integers(1, len(text) - 1))
    name = data.draw(st.sampled_from(TOOL_NAMES))
    assert not run(name, text[:cut]).executable


@PROPS
@given(
    customer_id=st.integers(),
    when=st.text(),
    note=st.none() | st.text(),
)
def test_valid_arguments_pass_unchanged(customer_id: int, when: str, note: str | None) -> None:
    args = {"customer_id": customer_id, "when": when, "note": note}
    for text in (json.dumps(args), json.dumps(args, ensure_ascii=False, indent=2)):
        result = run("book_slot", text)
        assert result.status == "ok"
        assert result.arguments is not None and result.arguments.model_dump() == args


@PROPS
@given(lang=st.text(max_size=10), year=st.none() | st.integers(), wrap=st.booleans())
def test_repaired_values_are_what_was_written(lang: str, year: int | None, wrap: bool) -> None:
    # Single quotes and a fence around a valid object: the repair may change the
    # syntax but never a value.
    args = {"query": "q", "filters": {"lang": lang, "year": year}, "limit": 3}
    text = json.dumps(args)
    if wrap:
        text = f"```json\n{text}\n```"
    result = run("search", text)
    assert result.executable and result.arguments is not None
    assert result.arguments.model_dump() == args


@PROPS
@given(text=mangled() | st.text(max_size=60), truncated=st.booleans())
def test_structured_output_is_handled(text: str, truncated: bool) -> None:
    result = prepare_output(text, Filters, truncated=truncated)
    check_invariants(result, Filters)
    if truncated:
        assert not result.executable
