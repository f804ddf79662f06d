"""The commands that read (`runs`, `show`, `history`, `trace`, `purge`, `demo --outbox`,
`breakers`), on SQLite and PostgreSQL: they never create a store, say so when there is
none or when a result is empty, and read realistic volumes (hundreds of runs, a
conversation of over a hundred turns) as the real `orchestrion` executable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.cli.helpers import assert_clean_error, cli, json_lines, run_python
from tests.store.pg import sql

READ_COMMANDS = [
    ("runs",),
    ("runs", "--json"),
    ("trace", "c1"),
    ("show", "run_x"),
    ("history", "c1"),
    ("purge",),
    ("demo", "--outbox"),
    ("close", "c1"),  # writes, but never creates a store either
]

CONVERSATIONS = 30
TURNS_EACH = 8
LONG_TURNS = 120
MESSAGES_PER_DEMO_TURN = 7  # user, call, result, two calls, two results, answer


def _nothing_there(store: str, folder: Path) -> bool:
    if store.startswith("sqlite:///"):
        return not Path(store.removeprefix("sqlite:///")).exists() and not any(
            folder.iterdir()
        )
    schema = parse_qs(urlsplit(store).query)["schema"][0]
    return not sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_on_a_missing_store_create_nothing(
    store: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    folder = tmp_path / "cwd"
    folder.mkdir()
    proc = cli(*args, store=store, cwd=folder, check=False)
    line = assert_clean_error(proc, code=1)
    assert line.startswith("Error: no store")
    assert _nothing_there(store, folder)


def test_breakers_on_a_missing_store_creates_nothing(store: str, tmp_path: Path) -> None:
    proc = cli("breakers", store=store, cwd=tmp_path)
    assert "no store at" in proc.stdout
    assert _nothing_there(store, tmp_path)


def test_empty_results_say_so(store: str, tmp_path: Path) -> None:
    assert "executed 0 run(s)" in cli("worker", "--drain", store=store).stdout  # creates it
    assert cli("runs", store=store).stdout.strip() == (
        "no runs in this store yet (start one with `orchestrion demo`)"
    )
    assert cli("runs", "--json", store=store).stdout == ""
    assert "no side effects recorded yet" in cli("demo", "--outbox", store=store).stdout
    assert "purged 0 conversation(s)" in cli("purge", store=store).stdout
    for args, needle in (
        (("history", "nope"), "no conversation 'nope'"),
        (("history", "nope", "--json"), "no conversation 'nope'"),
        (("runs", "--conversation", "nope"), "no conversation 'nope'"),
        (("show", "run_nope"), "no run or conversation 'run_nope'"),
        (("trace", "nope"), "no run or conversation with id 'nope'"),
    ):
        proc = cli(*args, store=store, check=False)
        assert_clean_error(proc, needle, code=1)
        assert proc.stdout == ""


@dataclass
class Seeded:
    store: str
    runs: list[dict]  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def seeded(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """30 conversations of 8 demo turns and one of 120, queued by one process and
    executed by `orchestrion worker --drain`."""
    folder = tmp_path_factory.mktemp("seed")
    run_python(
        f"""
        import asyncio
        from orchestrion import Orchestrion
        from orchestrion.demo.support import support_agent

        async def main():
            async with Orchestrion("{module_store}", agents=[support_agent()]) as orx:
                for turn in range({TURNS_EACH}):
                    for c in range({CONVERSATIONS}):
                        customer = 42 if c % 2 else 7
                        await orx.submit("support", f"I'm customer {{customer}}. Turn {{turn}}: "
                                         f"move me to Monday 09:{{turn:02d}}",
                                         conversation=f"c{{c:02d}}")
                for turn in range({LONG_TURNS}):
                    await orx.submit("support", f"I'm customer 42. Long turn {{turn}}: move me "
                                     f"to Friday {{10 + turn // 60}}:{{turn % 60:02d}}",
                                     conversation="long")

        asyncio.run(main())
        """,
        cwd=folder,
    )
    drained = cli("worker", "--drain", "--concurrency", "4", store=module_store, timeout=900)
    total = CONVERSATIONS * TURNS_EACH + LONG_TURNS
    assert f"executed {total} run(s)" in drained.stdout
    rows = json_lines(cli("runs", "--json", "--limit", "1000", store=module_store).stdout)
    return Seeded(module_store, rows)


def test_runs_lists_hundreds_newest_first(seeded: Seeded) -> None:
    rows = seeded.runs
    assert len(rows) == CONVERSATIONS * TURNS_EACH + LONG_TURNS
    assert {r["status"] for r in rows} == {"succeeded"}
    created = [r["created_at"] for r in rows]
    assert created == sorted(created, reverse=True)
    default = cli("runs", store=seeded.store).stdout.splitlines()
    assert len(default) == 100  # the default --limit
    assert [line.split()[0] for line in default] == [r["id"] for r in rows[:100]]
    one = json_lines(cli("runs", "--conversation", "c07", "--json", store=seeded.store).stdout)
    assert len(one) == TURNS_EACH and {r["conversation"] for r in one} == {"c07"}


def test_show_says_what_happened_to_a_run(seeded: Seeded) -> None:
    run = next(r for r in seeded.runs if r["conversation"] == "c07")  # its newest turn
    out = cli("show", run["id"], store=seeded.store).stdout
    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
    assert fields["run"] == run["id"]
    assert fields["status"] == "succeeded"
    assert fields["agent"] == "support"
    assert fields["conversation"] == "c07 (tenant default)"
    assert fields["message"] == f"I'm customer 42. Turn {TURNS_EACH - 1}: move me to Monday 09:07"
    assert fields["answer"].startswith("All set: your appointment is booked for Monday 09:07")
    assert fields["steps"] == "6 recorded"  # 3 model calls, 3 tool calls
    assert re.fullmatch(r"\S+ \S+ \(took [\d.]+ (ms|s)\)", fields["finished"])
    assert fields["epoch"] == "1 (claimed once)"
    assert "error" not in fields

    data = json_lines(cli("show", run["id"], "--json", store=seeded.store).stdout)[0]
    assert data["id"] == run["id"] and data["status"] == "succeeded" and data["steps"] == 6
    assert data["answer"] == fields["answer"] and data["tenant"] == "default"


def test_show_of_a_conversation_shows_its_latest_run(seeded: Seeded) -> None:
    newest = next(r for r in seeded.runs if r["conversation"] == "c07")
    by_conversation = cli("show", "c07", store=seeded.store).stdout
    assert by_conversation == cli("show", newest["id"], store=seeded.store).stdout
    proc = cli("show", "c99", store=seeded.store, check=False)
    assert_clean_error(proc, "no run or conversation 'c99'", code=1)


def test_history_of_a_long_conversation(seeded: Seeded) -> None:
    messages = json_lines(cli("history", "long", "--json", store=seeded.store).stdout)
    assert len(messages) == LONG_TURNS * MESSAGES_PER_DEMO_TURN
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == [
        f"I'm customer 42. Long turn {t}: move me to Friday {10 + t // 60}:{t % 60:02d}"
        for t in range(LONG_TURNS)
    ]
    assert [m["role"] for m in messages[:MESSAGES_PER_DEMO_TURN]] == [
        "user", "assistant", "tool", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip

    last = cli("history", "long", "--last", "7", store=seeded.store).stdout.splitlines()
    assert last[0].startswith("conversation long · agent support · tenant default")
    assert f"{LONG_TURNS * MESSAGES_PER_DEMO_TURN} message(s)" in last[0]
    assert last[1] == f"(the last 7 of {LONG_TURNS * MESSAGES_PER_DEMO_TURN})"
    body = last[2:]
    assert body[0] == f"user: {users[-1]}"
    assert body[1] == "assistant: Let me pull up your account."
    assert body[2] == '  -> crm_lookup({"customer_id": 42})'
    assert body[3].startswith('tool crm_lookup: {"customer_id":42,"found":true')
    assert body[-1].startswith("assistant: All set: your appointment is booked for Friday 11:59")
    # Long tool results are cut at a word boundary with an ellipsis, on one line each.
    assert all(len(line) <= 140 for line in body if line.startswith("tool "))


def test_history_text_of_every_turn(seeded: Seeded) -> None:
    out = cli("history", "c03", store=seeded.store).stdout
    users = [line for line in out.splitlines() if line.startswith("user: ")]
    assert users == [
        f"user: I'm customer 42. Turn {t}: move me to Monday 09:{t:02d}" for t in range(TURNS_EACH)
    ]
    assert out.count("-> book_appointment(") == TURNS_EACH


def test_trace_of_a_conversation_has_a_root_per_turn(seeded: Seeded) -> None:
    spans = json_lines(cli("trace", "c11", "--json", store=seeded.store).stdout)
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == TURNS_EACH
    assert {r["name"] for r in roots} == {"invoke_agent support"}
