"""The example clients in docs/server.md run as written against a live service: the
streaming one's resumption with Last-Event-ID loses and repeats nothing, and the paging one
reads a long conversation whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from orchestrion.demo.support import support_agent
from tests.server.helpers import KEY_A, seed_conversation, start_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def example(marker: str) -> str:
    """The one Python example of docs/server.md that contains `marker`."""
    found = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (code,) = [block for block in found if marker in block]
    return code


def test_the_documented_client_streams_and_resumes(tmp_path: Path) -> None:
    code = example("Last-Event-ID")
    script = tmp_path / "client.py"
    script.write_text(code)
    server = start_server(tmp_path / "s.db", [support_agent()])
    try:
        env = {**os.environ, "ORCHESTRION_URL": server.url, "ORCHESTRION_KEY": KEY_A}
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
        assert lines["status"] == "succeeded"
        # The text read across the drop is exactly the final answer's streamed text.
        assert lines["streamed"].endswith(lines["answer"])
        assert "Friday 10:00" in lines["answer"]
        page = server.client().get(f"/v1/runs/{lines['run']}/events?format=json").json()
        assert page["finished"] and page["events"][-1]["type"] == "run.finished"
        assert int(lines["events"]) == page["events"][-1]["seq"] == len(page["events"])
    finally:
        server.stop()


def test_the_documented_paging_client_reads_a_long_conversation_whole(tmp_path: Path) -> None:
    code = example("ORCHESTRION_CONVERSATION")
    script = tmp_path / "pages.py"
    script.write_text(code)
    store = f"sqlite:///{tmp_path / 's.db'}"
    conversation, _ = seed_conversation(store, turns=300)
    server = start_server(store, [support_agent()])
    try:
        env = {
            **os.environ,
            "ORCHESTRION_URL": server.url,
            "ORCHESTRION_KEY": KEY_A,
            "ORCHESTRION_CONVERSATION": conversation,
        }
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
        assert lines == {
            "messages": "600",
            "first": "0 user question 0",
            "runs": "300",
            "statuses": "['succeeded']",
        }
    finally:
        server.stop()
