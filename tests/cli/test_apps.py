"""`--app`: the user's agents for `worker` (and `serve`), named as module:attr or as
path/to/file.py:attr; every way loading fails is one line naming the file and line; the
demo agent joins only without --app or with --demo; a drain that leaves runs of unknown
agents behind says so and fails. Run as the real `orchestrion` executable."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.cli.helpers import assert_clean_error, cli, json_lines, run_python

GREETER = """\
from orchestrion import Agent, ScriptedModel, say

greeter = Agent("greeter", model=ScriptedModel([say("Hello from the worker.")]))
support = Agent("support", model=ScriptedModel([say("The app's own support agent.")]))
both = [greeter, support]
"""


def _write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def _queue(store: str, cwd: Path, agent_module: str, agent: str, conversations: int) -> None:
    """Queue one turn per conversation for `agent`, from a process that does not run it."""
    run_python(
        f"""
        import asyncio, sys
        sys.path.insert(0, "{cwd / 'app'}")
        from orchestrion import Orchestrion
        from {agent_module} import {agent}

        async def main():
            async with Orchestrion("{store}", agents=[{agent}]) as orx:
                for n in range({conversations}):
                    await orx.submit("{agent}", f"hi {{n}}", conversation=f"{agent}-{{n}}")

        asyncio.run(main())
        """,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "spec",
    ["./app/myagents.py:greeter", "app/myagents.py:greeter", "{abs}:greeter", "myagents:greeter"],
)
def test_worker_runs_an_app_named_by_file_or_module(
    store: str, tmp_path: Path, spec: str
) -> None:
    path = _write(tmp_path, "app/myagents.py", GREETER)
    _queue(store, tmp_path, "myagents", "greeter", 3)
    # A module name is looked up from the current folder: run from the app's folder.
    cwd = tmp_path / "app" if spec.startswith("myagents") else tmp_path
    proc = cli("worker", "--drain", "--app", spec.format(abs=path), store=store, cwd=cwd)
    assert "executed 3 run(s)" in proc.stdout
    rows = json_lines(cli("runs", "--json", store=store).stdout)
    assert sorted(r["status"] for r in rows) == ["succeeded"] * 3
    history = json_lines(cli("history", "greeter-1", "--json", store=store).stdout)
    assert history[-1]["content"] == "Hello from the worker."


def test_a_drain_that_leaves_runs_of_unknown_agents_fails(store: str, tmp_path: Path) -> None:
    _write(tmp_path, "app/myagents.py", GREETER)
    _queue(store, tmp_path, "myagents", "greeter", 4)
    proc = cli("worker", "--drain", store=store, cwd=tmp_path, check=False)
    assert "drained: executed 0 run(s)" in proc.stdout
    assert_clean_error(proc, "4 conversation(s)", "'greeter' in 4", "--app", code=1)
    statuses = {r["status"] for r in json_lines(cli("runs", "--json", store=store).stdout)}
    assert statuses == {"queued"}
    cli("worker", "--drain", "--app", "app/myagents.py:greeter", store=store, cwd=tmp_path)
    again = cli("worker", "--drain", "--app", "app/myagents.py:greeter", store=store, cwd=tmp_path)
    assert "executed 0 run(s)" in again.stdout


def test_the_demo_agent_joins_only_without_app_or_with_demo(store: str, tmp_path: Path) -> None:
    _write(tmp_path, "app/myagents.py", GREETER)
    # The app's own agent named "support" is not shadowed by (or clashing with) the demo's.
    _queue(store, tmp_path, "myagents", "support", 2)
    proc = cli("worker", "--drain", "--app", "app/myagents.py:support", store=store, cwd=tmp_path)
    assert "executed 2 run(s)" in proc.stdout
    answers = json_lines(cli("history", "support-0", "--json", store=store).stdout)
    assert answers[-1]["content"] == "The app's own support agent."
    clash = cli(
        "worker", "--drain", "--demo", "--app", "app/myagents.py:both", store=store,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert_clean_error(clash, "--demo", "'support'", code=1)


@pytest.mark.parametrize(
    ("files", "spec", "needles"),
    [
        (
            {"broken.py": "from orchestrion import Agent\nagents = [\n    Agent(\n"},
            "broken:agents",
            ("--app", "syntax error in", "broken.py, line "),
        ),
        (
            {"pkg/broken2.py": "x = 1\ndef f(:\n    pass\n"},
            "./pkg/broken2.py:x",
            ("--app", "broken2.py, line 2", "def f(:"),
        ),
        (
            {"fails.py": "import json\n\nraise RuntimeError('no config file')\n"},
            "fails:agent",
            ("--app", "RuntimeError: no config file", "fails.py, line 3"),
        ),
        (
            {"needs.py": "import not_installed_xyz\n"},
            "needs:agent",
            ("--app", "No module named 'not_installed_xyz'", "needs.py, line 1"),
        ),
        (
            {"keyless.py": "from orchestrion import Agent\nagent = Agent('a', model='openai:x')\n"},
            "keyless.py:agent",
            ("--app", "OPENAI_API_KEY is not set", "keyless.py, line 2"),
        ),
        ({"ok.py": GREETER}, "ok.py:nope", ("ok.py has no attribute 'nope'", "both, greeter")),
        ({"ok.py": GREETER}, "ok.py:GREETER_MISSING", ("it defines: both, greeter, support",)),
        ({"ok.py": GREETER}, "ok:Agent", ("ok:Agent is a type, not an Agent",)),
        ({}, "missing.py:x", ("no such file", "missing.py")),
        ({}, "no_such_module_xyz:x", ("no module named 'no_such_module_xyz'",)),
        ({}, "justaname", ("expected module:attribute or path/to/file.py:attribute",)),
        ({"notes.txt": "hello"}, "notes.txt:x", ("must be a .py file",)),
    ],
)
def test_an_app_that_cannot_load_is_one_line(
    tmp_path: Path, files: dict[str, str], spec: str, needles: tuple[str, ...]
) -> None:
    for name, code in files.items():
        _write(tmp_path, name, code)
    environ_store = tmp_path / "x.db"
    proc = cli("worker", "--drain", "--app", spec, store=environ_store, cwd=tmp_path, check=False)
    line = assert_clean_error(proc, *needles, code=1)
    assert line.startswith("Error: --app: ")
    assert not environ_store.exists()  # refused before the store was opened
