"""Every malformed-argument case in corpus_arguments.json reaches its expected outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrion.models.messages import ToolCall
from orchestrion.tools import ToolRegistry
from orchestrion.tools.arguments import prepare_arguments

CORPUS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "corpus_arguments.json").read_text(encoding="utf-8")
)["cases"]


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_corpus_case(case: dict[str, Any], registry: ToolRegistry) -> None:
    call = ToolCall(id="call_1", name=case["tool"], arguments=case["arguments"])
    result = prepare_arguments(call, registry, truncated=case.get("truncated", False))

    assert result.status == case["expect"], (result.error, result.repairs)
    assert result.raw == case["arguments"]  # the raw text is kept verbatim for the trace
    assert result.requested_name == case["tool"]
    if case["expect"] in ("ok", "repaired"):
        assert result.executable
        assert result.error is None
        assert result.arguments is not None
        tool = registry.get(result.tool_name)
        assert tool is not None and isinstance(result.arguments, tool.args_model)
        assert result.arguments.model_dump() == case["value"]
        if case["expect"] == "ok":
            assert result.repairs == ()
        else:
            assert any(case["repair"] in r for r in result.repairs), result.repairs
    else:
        assert not result.executable
        assert result.arguments is None
        assert result.error is not None
        for fragment in case["error"]:
            assert fragment in result.error, result.error
        # A model reads this: it must stay compact.
        assert len(result.error) < 400, result.error
        # The guard that turns internal bugs into re-asks must never be what answered.
        assert "could not be processed" not in result.error


def test_corpus_covers_every_class_of_the_issue() -> None:
    classes = {c["class"] for c in CORPUS}
    required = {
        "markdown fence", "prose", "trailing comma", "single quotes", "unquoted keys",
        "double encoding", "nested value as string", "server duplication", "Python literals",
        "template tokens", "broken escapes", "truncated output", "empty or null",
        "wrong top-level type", "wrong type", "missing fields", "extra fields", "unknown tool",
    }  # fmt: skip
    assert required <= classes, required - classes
    outcomes = {c["expect"] for c in CORPUS}
    assert outcomes == {"ok", "repaired", "invalid", "truncated", "unknown_tool"}
