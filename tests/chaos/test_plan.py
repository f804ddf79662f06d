from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrion.chaos.plan import (
    FAULTS,
    MALFORMED_VARIANTS,
    PRESETS,
    FaultPlan,
    FaultRule,
    PlanError,
    choose,
    parse_fault_header,
    preset,
)
from orchestrion.chaos.scripts import default_script, load_script, sample_arguments
from orchestrion.chaos.server import corrupt_arguments
from orchestrion.models import Message, ModelRequest, ToolCall, ToolSpec


def faults_for(plan: FaultPlan, calls: int, **kw: object) -> list[str | None]:
    injected: dict[int, int] = {}
    out: list[str | None] = []
    for n in range(1, calls + 1):
        chosen = choose(
            plan,
            n,
            protocol=kw.get("protocol", "openai"),  # type: ignore[arg-type]
            streaming=bool(kw.get("streaming", True)),
            injected=injected,
        )
        if chosen:
            injected[chosen[0]] = injected.get(chosen[0], 0) + 1
        out.append(chosen[1].fault if chosen else None)
    return out


def test_every_and_at_and_times() -> None:
    plan = FaultPlan(
        faults=(
            FaultRule(fault="hang", at=(1,)),
            FaultRule(fault="rate_limit", every=3),
            FaultRule(fault="server_error", times=2),
        )
    )
    assert faults_for(plan, 7) == [
        "hang",
        "server_error",
        "rate_limit",
        "server_error",
        None,
        "rate_limit",
        None,
    ]


def test_protocol_and_streaming_filters() -> None:
    plan = FaultPlan(faults=(FaultRule(fault="stall", protocols=("anthropic",), streaming=True),))
    assert faults_for(plan, 2, protocol="openai") == [None, None]
    assert faults_for(plan, 2, protocol="anthropic", streaming=False) == [None, None]
    assert faults_for(plan, 2, protocol="anthropic") == ["stall", "stall"]


def test_probability_is_reproducible_per_seed() -> None:
    rules = (
        FaultRule(fault="rate_limit", probability=0.5),
        FaultRule(fault="latency", probability=0.5),
    )
    first = faults_for(FaultPlan(seed=7, faults=rules), 300)
    again = faults_for(FaultPlan(seed=7, faults=rules), 300)
    other = faults_for(FaultPlan(seed=8, faults=rules), 300)
    assert first == again
    assert first != other
    # seeded, so this is a fixed number, not a statistical hope
    assert 100 < first.count("rate_limit") < 200
    assert 0 < first.count("latency") < first.count("rate_limit")


def test_fault_header_parsing() -> None:
    rule = parse_fault_header("rate_limit; retry_after=2.5; retry_after_format=date")
    assert rule == FaultRule(fault="rate_limit", retry_after=2.5, retry_after_format="date")
    assert parse_fault_header("none") is None
    with pytest.raises(PlanError, match=r"^fault: unknown fault 'explode' \(`orchestrion chaos"):
        parse_fault_header("explode")
    with pytest.raises(PlanError, match="expected key=value, got 'retry_after'"):
        parse_fault_header("rate_limit; retry_after")
    with pytest.raises(PlanError) as raised:
        parse_fault_header("rate_limit; retry_after=soon; colour=red")
    assert str(raised.value) == (
        "retry_after: input should be a valid number, unable to parse string as a number "
        "(got 'soon'); colour: unknown field"
    )


def test_plan_files_json_and_toml(tmp_path: Path) -> None:
    data = {"seed": 3, "script": "echo", "faults": [{"fault": "overloaded", "every": 2}]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    (tmp_path / "p.toml").write_text(
        'seed = 3\nscript = "echo"\n[[faults]]\nfault = "overloaded"\nevery = 2\n'
    )
    assert FaultPlan.load(tmp_path / "p.json") == FaultPlan.load(tmp_path / "p.toml")
    (tmp_path / "bad.json").write_text(json.dumps({"faults": [{"fault": "x"}]}))
    with pytest.raises(PlanError):
        FaultPlan.load(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "rules.json",
            '{"faults": [{"fault": "nope", "probability": 2}], "sed": 1}',
            "rules.json: faults[0].fault: unknown fault 'nope' (`orchestrion chaos faults` "
            "lists them); faults[0].probability: input should be less than or equal to 1 "
            "(got 2); sed: unknown field",
        ),
        ("cut.json", '{"faults": [', "cut.json: not valid JSON (line 1, column 13: Expecting"),
        ("cut.toml", "faults = [\n", "cut.toml: not valid TOML (Invalid value"),
        ("rule.toml", "[[faults]]\nevery = 2\n", "rule.toml: faults[0].fault: required"),
        ("latin1.json", "\udcff", "cannot read"),
    ],
)
def test_plan_file_errors_are_one_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(PlanError) as raised:
        FaultPlan.load(path)
    text = str(raised.value)
    assert "\n" not in text and "errors.pydantic.dev" not in text
    assert message in text


def test_presets_are_valid_and_cover_every_fault() -> None:
    assert {"none", "flaky", "rate-limited", "overloaded", "slow", "bad-output"} <= set(PRESETS)
    covered = {r.fault for _, plan in PRESETS.values() for r in plan.faults}
    assert covered == set(FAULTS)
    with pytest.raises(ValueError, match="flaky"):
        preset("nope")


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
def test_every_malformed_variant_is_really_broken(variant: str) -> None:
    broken = corrupt_arguments('{"city": "Paris", "days": 2}', variant)
    try:
        value = json.loads(broken)
    except ValueError:
        return
    assert not isinstance(value, dict)


def test_default_script_calls_a_tool_then_answers() -> None:
    tool = ToolSpec(
        name="book",
        parameters={
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "kind": {"enum": ["a", "b"]},
                "note": {"type": "string"},
            },
            "required": ["n", "kind"],
        },
    )
    assert sample_arguments(tool) == {"n": 1, "kind": "a"}
    first = default_script(ModelRequest(messages=(Message.user("go"),), tools=(tool,)))
    assert [c.name for c in first.calls] == ["book"]
    call = ToolCall(id="c", name="book", arguments=first.calls[0].arguments)
    after = default_script(
        ModelRequest(
            messages=(
                Message.user("go"),
                Message.assistant(None, (call,)),
                Message.tool_result(call, "booked"),
            ),
            tools=(tool,),
        )
    )
    assert not after.calls and after.text == "Done. The tool answered: booked"
    plain = default_script(ModelRequest(messages=(Message.user("go"),)))
    assert not plain.calls and plain.text


def test_load_script_by_name_or_path() -> None:
    assert load_script("echo") is load_script("echo")
    assert callable(load_script("orchestrion.chaos.scripts:text_script"))
    with pytest.raises(ValueError, match="unknown script"):
        load_script("nope")


def test_default_script_asks_about_the_numbers_the_user_gave() -> None:
    tool = ToolSpec(
        name="crm_lookup",
        parameters={"type": "object", "properties": {"customer_id": {"type": "integer"}}},
    )
    said = Message.user("Hi, I'm customer 42. Move me to Friday 10:00.")
    reply = default_script(ModelRequest(messages=(said,), tools=(tool,)))
    assert json.loads(reply.calls[0].arguments) == {"customer_id": 42}
    vague = default_script(ModelRequest(messages=(Message.user("hello"),), tools=(tool,)))
    assert json.loads(vague.calls[0].arguments) == {"customer_id": 1}
