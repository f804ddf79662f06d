"""`orchestrion close CONVERSATION`, as the real executable on SQLite and PostgreSQL: the
conversation takes no more turns and keeps its history; a turn in flight refuses the
close; an unknown id is one line."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import assert_clean_error, cli, run_python


def test_close_then_a_turn_is_refused_and_the_history_stays(store: str, tmp_path: Path) -> None:
    for conversation in ("c1", "c2"):
        cli("demo", "--conversation", conversation, "--no-trace", store=store, cwd=tmp_path)
    closed = cli("close", "c1", store=store, cwd=tmp_path)
    lines = closed.stdout.splitlines()
    assert lines[0] == "conversation c1 is closed: it takes no more turns"
    assert lines[1].startswith("its 7 message(s) stay readable until it expires (")
    assert cli("close", "c1", store=store, cwd=tmp_path).stdout.splitlines()[0] == lines[0]

    refused = cli("demo", "--conversation", "c1", store=store, cwd=tmp_path, check=False)
    line = assert_clean_error(refused, code=1)
    assert line == (
        "Error: conversation 'c1' is closed: it takes no more turns (its history stays "
        "readable until it expires); start a new conversation"
    )
    assert "you:" not in refused.stdout  # refused before the turn began
    history = cli("history", "c1", store=store, cwd=tmp_path).stdout
    assert "· CLOSED · 7 message(s)" in history.splitlines()[0]
    runs = cli("runs", "--conversation", "c1", store=store, cwd=tmp_path).stdout
    assert len(runs.splitlines()) == 1  # nothing was queued
    # The other conversation is untouched.
    cli("demo", "--conversation", "c2", "--no-trace", store=store, cwd=tmp_path)
    assert "· AWAITING_INPUT · 14 message(s)" in cli(
        "history", "c2", store=store, cwd=tmp_path
    ).stdout.splitlines()[0]


def test_close_with_a_turn_in_flight_or_an_unknown_id_is_one_line(
    store: str, tmp_path: Path
) -> None:
    cli("demo", "--conversation", "c1", "--no-trace", store=store, cwd=tmp_path)
    # A queued turn nobody executes (no worker runs here).
    run_id = run_python(
        f"""
        import asyncio
        from orchestrion import Orchestrion
        from orchestrion.demo.support import support_agent

        async def main():
            async with Orchestrion({store!r}, agents=[support_agent()]) as orx:
                print((await orx.submit("support", "hi again", conversation="c1")).id)

        asyncio.run(main())
        """,
        tmp_path,
    ).strip()
    busy = cli("close", "c1", store=store, cwd=tmp_path, check=False)
    assert assert_clean_error(busy, code=1) == (
        f"Error: conversation 'c1' has a turn in flight ({run_id}): cancel it or wait for "
        "it to end, then close the conversation"
    )
    cli("worker", "--drain", store=store, cwd=tmp_path)  # the turn ends
    assert "is closed" in cli("close", "c1", store=store, cwd=tmp_path).stdout
    unknown = cli("close", "c404", store=store, cwd=tmp_path, check=False)
    assert assert_clean_error(unknown, code=1) == "Error: no conversation 'c404' in this store"
