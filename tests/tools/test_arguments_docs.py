"""The example in docs/arguments.md runs and prints what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_doc_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "arguments.md").read_text(encoding="utf-8")
    code = re.search(r"^```python\n(.*?)^```$", doc, re.S | re.M)
    assert code is not None
    exec(compile(code.group(1), "docs/arguments.md", "exec"), {"__name__": "doc_example"})
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "repaired customer_id=7 when='noon'",
        "('removed markdown code fence', 'replaced single quotes with double quotes', "
        "'removed trailing comma(s)')",
        "reask",
        "Tool 'book_slot': field 'customer_id': expected an integer, got \"abc\". "
        "Send the call again with corrected JSON arguments.",
        "truncated",
    ]
