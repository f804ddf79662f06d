"""The `orchestrion` console script, run for real as a subprocess, on SQLite and PostgreSQL.

One store per backend (two demo turns on one conversation, plus an unknown-customer turn on
another) is shared by the read-only checks: runs, outbox, trace, purge-with-nothing-expired.
Checks about SQLite files (a text file, a folder) run on SQLite only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.cli.helpers import (
    REPO,
    assert_clean_error,
    cli,
    env,
    json_lines,
    run_id_from_demo,
    run_python,
)

CONV = "conv-cli"
OTHER_CONV = "conv-unknown"
FIRST_MESSAGE = "Hi, I'm customer 42. Please move my appointment to Friday 10:00 and email me."
SECOND_MESSAGE = "Hello again, customer 7 here: move my appointment to Monday 15:30 please."
SPAN_NAMES = (
    "chat scripted-support",
    "execute_tool crm_lookup",
    "execute_tool book_appointment",
    "execute_tool send_email",
)
SPAN_KEYS = {
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "start",
    "end",
    "latency_ms",
    "status",
    "attributes",
}


@dataclass
class DemoStore:
    path: str  # the store URL
    first: CompletedProcess[str]
    second: CompletedProcess[str]
    unknown: CompletedProcess[str]


@pytest.fixture(scope="module")
def demo_store(module_store: str, tmp_path_factory: pytest.TempPathFactory) -> DemoStore:
    """Two demo turns on one conversation and an unknown customer's turn on another, on
    SQLite and on PostgreSQL."""
    folder = tmp_path_factory.mktemp("demo")
    path = module_store
    first = cli("demo", "--conversation", CONV, "--message", FIRST_MESSAGE, store=path, cwd=folder)
    second = cli(
        "demo",
        "--conversation",
        CONV,
        "--message",
        SECOND_MESSAGE,
        "--latency",
        "0.01",
        "--no-trace",
        store=path,
        cwd=folder,
    )
    unknown = cli(
        "demo",
        "--conversation",
        OTHER_CONV,
        "--message",
        "I'm customer 999",
        store=path,
        cwd=folder,
    )
    return DemoStore(path, first, second, unknown)


def _runs(store: str | Path, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    return json_lines(cli("runs", "--json", *extra, store=store).stdout)


_run_id_from_demo = run_id_from_demo


# ---- demo ---------------------------------------------------------------------------------


def test_demo_streams_the_answer_and_prints_the_trace(demo_store: DemoStore) -> None:
    out = demo_store.first.stdout
    assert "Let me pull up your account." in out
    assert "Thanks, Ada. Moving you to Friday 10:00 and emailing you." in out
    assert "All set: your appointment is booked for Friday 10:00 (reference BK-" in out
    assert f"conversation {CONV} · succeeded" in out
    for name in SPAN_NAMES:
        assert name in out, name
    assert "invoke_agent support" in out
    # The answer streams before the trace.
    assert out.index("All set") < out.index("execute_tool send_email")


def test_second_turn_on_the_same_conversation_and_no_trace(demo_store: DemoStore) -> None:
    out = demo_store.second.stdout
    assert "Thanks, Alan. Moving you to Monday 15:30 and emailing you." in out
    assert "booked for Monday 15:30" in out
    assert f"conversation {CONV} · succeeded" in out
    for name in (*SPAN_NAMES, "invoke_agent"):
        assert name not in out, name
    runs = _runs(demo_store.path, "--conversation", CONV)
    assert len(runs) == 2
    assert {r["conversation"] for r in runs} == {CONV}
    assert {r["status"] for r in runs} == {"succeeded"}
    assert {r["id"] for r in runs} == {
        _run_id_from_demo(demo_store.first.stdout),
        _run_id_from_demo(demo_store.second.stdout),
    }


def test_unknown_customer_gets_a_polite_answer(demo_store: DemoStore) -> None:
    out = demo_store.unknown.stdout
    assert "I could not find customer 999. Could you check the number?" in out
    assert f"conversation {OTHER_CONV} · succeeded" in out
    assert "execute_tool crm_lookup" in out
    assert "execute_tool book_appointment" not in out
    # "Not found" is the lookup's answer, not a failure: nothing was retried or given up.
    assert '"found":false' in out
    assert "gave up" not in out and "retry" not in out and "(error)" not in out
    (run,) = _runs(demo_store.path, "--conversation", OTHER_CONV)
    assert run["status"] == "succeeded"


# ---- outbox -------------------------------------------------------------------------------


def test_outbox_holds_one_booking_and_one_email_per_turn(demo_store: DemoStore) -> None:
    rows = json_lines(cli("demo", "--outbox", "--json", store=demo_store.path).stdout)
    for row in rows:
        assert {"idempotency_key", "kind", "run_id", "payload"} <= row.keys()
    kinds = sorted(r["kind"] for r in rows)
    assert kinds == ["booking", "booking", "email", "email"]
    keys = [r["idempotency_key"] for r in rows]
    assert len(set(keys)) == 4
    for row in rows:
        run_id, _, seq = row["idempotency_key"].rpartition(":")
        assert run_id == row["run_id"]
        assert seq.isdigit()
    turn_ids = {
        _run_id_from_demo(demo_store.first.stdout),
        _run_id_from_demo(demo_store.second.stdout),
    }
    assert {r["run_id"] for r in rows} == turn_ids
    for run_id in turn_ids:
        assert sorted(r["kind"] for r in rows if r["run_id"] == run_id) == ["booking", "email"]
    slots = sorted(r["payload"]["slot"] for r in rows if r["kind"] == "booking")
    assert slots == ["Friday 10:00", "Monday 15:30"]
    recipients = sorted(r["payload"]["to"] for r in rows if r["kind"] == "email")
    assert recipients == ["ada@example.com", "alan@example.com"]

    text = cli("demo", "--outbox", store=demo_store.path).stdout
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 4
    for key in keys:
        assert sum(key in line for line in lines) == 1, key


def test_outbox_of_an_empty_store(store: str) -> None:
    assert_clean_error(cli("demo", "--outbox", store=store, check=False), "no store")
    cli("worker", "--drain", store=store)  # a command that writes creates the store
    assert cli("demo", "--outbox", "--json", store=store).stdout.strip() == ""
    assert "no side effects" in cli("demo", "--outbox", store=store).stdout


# ---- runs ---------------------------------------------------------------------------------


def test_runs_lists_every_run(demo_store: DemoStore) -> None:
    rows = _runs(demo_store.path)
    assert len(rows) == 3
    for row in rows:
        assert {"id", "conversation", "status"} <= row.keys()
        assert row["status"] == "succeeded"
    assert sorted(r["conversation"] for r in rows) == sorted([CONV, CONV, OTHER_CONV])

    text = cli("runs", store=demo_store.path).stdout
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 3
    for row in rows:
        (line,) = [ln for ln in lines if row["id"] in ln]
        assert row["conversation"] in line
        assert "succeeded" in line


# ---- trace --------------------------------------------------------------------------------


def _check_spans(spans: list[dict]) -> None:  # type: ignore[type-arg]
    assert spans
    ids = {s["span_id"] for s in spans}
    assert len(ids) == len(spans), "span ids repeat"
    for s in spans:
        assert SPAN_KEYS <= s.keys(), s
        assert s["end"] is not None, s
        assert s["end"] >= s["start"], s
        if s["parent_span_id"] is not None:
            assert s["parent_span_id"] in ids, s
    names = {s["name"] for s in spans}
    for name in SPAN_NAMES:
        assert name in names, name


def test_trace_of_a_run(demo_store: DemoStore) -> None:
    run_id = _run_id_from_demo(demo_store.first.stdout)
    spans = json_lines(cli("trace", run_id, "--json", store=demo_store.path).stdout)
    _check_spans(spans)
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == 1
    assert roots[0]["name"] == "invoke_agent support"
    assert {s["trace_id"] for s in spans} == {roots[0]["trace_id"]}
    for name in SPAN_NAMES[1:]:
        (tool_span,) = [s for s in spans if s["name"] == name and s["type"] == "step.finished"]
        assert tool_span["latency_ms"] is not None
        assert tool_span["status"] == "ok"

    text = cli("trace", run_id, store=demo_store.path).stdout
    assert run_id in text
    for name in SPAN_NAMES:
        assert name in text


def test_trace_of_a_conversation_has_one_root_per_turn(demo_store: DemoStore) -> None:
    spans = json_lines(cli("trace", CONV, "--json", store=demo_store.path).stdout)
    _check_spans(spans)
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == 2
    assert len({r["trace_id"] for r in roots}) == 2
    assert {s["trace_id"] for s in spans} == {r["trace_id"] for r in roots}
    # Each turn did its own booking.
    booked = [s for s in spans if s["name"] == "execute_tool book_appointment"]
    assert len({s["trace_id"] for s in booked}) == 2

    text = cli("trace", CONV, store=demo_store.path).stdout
    assert text.count("invoke_agent support") == 2


def test_trace_of_an_unknown_id(demo_store: DemoStore) -> None:
    proc = cli("trace", "no-such-run-xyz", store=demo_store.path, check=False)
    assert_clean_error(proc, "no-such-run-xyz")
    proc = cli("trace", "no-such-run-xyz", "--json", store=demo_store.path, check=False)
    assert_clean_error(proc, "no-such-run-xyz")
    assert proc.stdout.strip() == ""


# ---- purge --------------------------------------------------------------------------------


def test_purge_with_nothing_expired_deletes_nothing(demo_store: DemoStore) -> None:
    out = cli("purge", store=demo_store.path).stdout
    assert "purged 0 conversation(s), 0 run(s), 0 event(s)" in out
    assert len(_runs(demo_store.path)) == 3
    spans = json_lines(cli("trace", CONV, "--json", store=demo_store.path).stdout)
    assert len([s for s in spans if s["parent_span_id"] is None]) == 2


def test_purge_deletes_only_expired_conversations(store: str, tmp_path: Path) -> None:
    run_python(
        f"""
        import asyncio, time
        from orchestrion import Orchestrion
        from orchestrion.demo.support import support_agent

        async def main():
            short = support_agent()
            short.conversation_ttl = 0.01
            async with Orchestrion("{store}", agents=[short]) as orx:
                await orx.send("support", "I'm customer 7", conversation="old")
            async with Orchestrion("{store}", agents=[support_agent()]) as orx:
                await orx.send("support", "I'm customer 42", conversation="kept")
            time.sleep(0.05)

        asyncio.run(main())
        """,
        cwd=tmp_path,
    )
    assert [r["status"] for r in _runs(store)] == ["succeeded", "succeeded"]
    out = cli("purge", store=store).stdout
    match = re.search(r"purged (\d+) conversation\(s\), (\d+) run\(s\), (\d+) event\(s\)", out)
    assert match, out
    assert (int(match.group(1)), int(match.group(2))) == (1, 1)
    assert int(match.group(3)) > 0
    (row,) = _runs(store)
    assert row["conversation"] == "kept"
    assert_clean_error(cli("trace", "old", store=store, check=False), "old")
    assert "purged 0 conversation(s)" in cli("purge", store=store).stdout


# ---- worker -------------------------------------------------------------------------------


def test_worker_drain_with_nothing_queued(store: str) -> None:
    proc = cli("worker", "--drain", store=store)
    assert "executed 0 run(s)" in proc.stdout


def test_worker_drain_executes_runs_queued_by_another_process(store: str, tmp_path: Path) -> None:
    run_python(
        f"""
        import asyncio
        from orchestrion import Orchestrion
        from orchestrion.demo.support import support_agent

        async def main():
            async with Orchestrion("{store}", agents=[support_agent()]) as orx:
                await orx.submit("support", "I'm customer 42, move me to Friday 10:00",
                                 conversation="q1")
                await orx.submit("support", "I'm customer 42, move me to Monday 09:30",
                                 conversation="q1")
                await orx.submit("support", "I'm customer 7, move me to Tuesday 11:00",
                                 conversation="q2")

        asyncio.run(main())
        """,
        cwd=tmp_path,
    )
    before = _runs(store)
    assert len(before) == 3
    assert {r["status"] for r in before} == {"queued"}

    proc = cli("worker", "--drain", "--concurrency", "2", store=store)
    assert "executed 3 run(s)" in proc.stdout
    after = _runs(store)
    assert len(after) == 3
    assert {r["id"] for r in after} == {r["id"] for r in before}
    assert {r["status"] for r in after} == {"succeeded"}
    # Runs of one conversation execute in the order they were queued.
    q1 = sorted((r for r in after if r["conversation"] == "q1"), key=lambda r: r["created_at"])
    assert len(q1) == 2
    assert q1[0]["finished_at"] <= q1[1]["finished_at"]

    effects = json_lines(cli("demo", "--outbox", "--json", store=store).stdout)
    bookings = sorted(e["payload"]["slot"] for e in effects if e["kind"] == "booking")
    assert bookings == ["Friday 10:00", "Monday 09:30", "Tuesday 11:00"]
    assert sum(e["kind"] == "email" for e in effects) == 3

    spans = json_lines(cli("trace", "q1", "--json", store=store).stdout)
    _check_spans(spans)
    assert len([s for s in spans if s["parent_span_id"] is None]) == 2

    again = cli("worker", "--drain", store=store)
    assert "executed 0 run(s)" in again.stdout


# ---- where the store is -------------------------------------------------------------------


def test_store_from_the_environment(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env_store = tmp_path / "env.db"
    environ = env(ORCHESTRION_STORE=f"sqlite:///{env_store}")
    out = cli("demo", "--conversation", "env-conv", "--no-trace", cwd=cwd, environ=environ).stdout
    assert "All set" in out
    assert env_store.is_file()
    assert not (cwd / "orchestrion.db").exists()
    (row,) = json_lines(cli("runs", "--json", cwd=cwd, environ=environ).stdout)
    assert row["conversation"] == "env-conv"
    # The same file, named by --store, holds the same run.
    assert [r["id"] for r in _runs(env_store)] == [row["id"]]


def test_default_store_is_orchestrion_db_in_the_current_folder(tmp_path: Path) -> None:
    out = cli("demo", "--conversation", "default-conv", "--no-trace", cwd=tmp_path).stdout
    assert "All set" in out
    assert (tmp_path / "orchestrion.db").is_file()
    (row,) = json_lines(cli("runs", "--json", cwd=tmp_path).stdout)
    assert row["conversation"] == "default-conv"
    assert row["status"] == "succeeded"


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("runs",),
        ("demo", "--no-trace"),
        ("demo", "--outbox"),
        ("trace", "anything"),
        ("show", "anything"),
        ("history", "anything"),
        ("purge",),
        ("worker", "--drain"),
    ],
)
def test_a_text_file_is_not_a_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    notes = tmp_path / "notes.txt"
    content = b"shopping list\n- eggs\n- milk\n" * 50
    notes.write_bytes(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli(*args, store=notes, cwd=tmp_path, check=False)
    assert_clean_error(proc, "not an orchestrion store")
    assert str(notes) in proc.stderr
    assert notes.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("foo://x", ("foo://x", "sqlite:///")),
        ("postgresql://nosuchhost.invalid/app", ("PostgreSQL", "nosuchhost.invalid")),
    ],
)
def test_unknown_store_scheme(tmp_path: Path, url: str, needles: tuple[str, ...]) -> None:
    proc = cli("runs", store=url, cwd=tmp_path, check=False)
    assert_clean_error(proc, *needles)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_or_a_missing_folder_is_not_a_store(tmp_path: Path) -> None:
    assert_clean_error(cli("runs", store=tmp_path, check=False), "folder", str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "nowhere" / "x.db"
    assert_clean_error(cli("runs", store=missing, check=False), str(missing.parent))
    assert not missing.parent.exists()


def test_worker_refuses_a_bad_app(tmp_path: Path) -> None:
    store = tmp_path / "x.db"
    proc = cli("worker", "--drain", "--app", "no_such_module_xyz:agents", store=store, check=False)
    assert_clean_error(proc, "--app", "no_such_module_xyz")
    proc = cli("worker", "--drain", "--app", "json:dumps", store=store, check=False)
    assert_clean_error(proc, "--app", "not an Agent")
    assert not store.exists()


def test_bench_lists_available_benchmarks(tmp_path: Path) -> None:
    proc = cli("bench", "nosuch", cwd=tmp_path, check=False)
    assert_clean_error(proc, "nosuch", "available:")
    shipped = [p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_")]
    assert shipped
    for name in shipped:
        assert name in proc.stderr, name


# ---- help ---------------------------------------------------------------------------------

SUBCOMMAND_OPTIONS = {
    "demo": ["--conversation", "--message", "--latency", "--outbox", "--json", "--no-trace"],
    "worker": ["--drain", "--concurrency", "--app", "--demo", "--grace"],
    "runs": ["--json", "--conversation", "--limit"],
    "show": ["ID", "--json"],
    "history": ["CONVERSATION", "--json", "--last"],
    "trace": ["ID", "--json"],
    "purge": ["--help"],
    "bench": ["NAME", "--quick", "--json"],
    "serve": ["--app", "--demo", "--port", "--keys-file"],
}


def test_group_help_names_options_and_every_command() -> None:
    out = cli("--help").stdout
    for option in ("--store", "--durability", "--verbose", "--debug", "--version"):
        assert option in out, option
    listed = re.findall(r"^  (\w+)\s", out.split("Commands:")[1], re.MULTILINE)
    assert set(SUBCOMMAND_OPTIONS) <= set(listed)
    assert cli("-h").stdout == out


def test_every_listed_subcommand_has_help() -> None:
    out = cli("--help").stdout
    listed = re.findall(r"^  (\w+)\s", out.split("Commands:")[1], re.MULTILINE)
    assert listed
    for command in listed:
        help_text = cli(command, "--help").stdout
        assert f"Usage: orchestrion {command}" in help_text, command
        assert "Options:" in help_text, command
        for option in SUBCOMMAND_OPTIONS.get(command, []):
            assert option in help_text, (command, option)


def test_demo_on_the_generic_scripted_model_shows_the_happy_path(tmp_path: Path) -> None:
    out = cli("demo", "--model", "scripted", store=tmp_path / "x.db").stdout
    assert "  -> crm_lookup" in out
    assert 'Done. The tool answered: {"customer_id":42,"found":true,"name":"Ada Lovelace"' in out
    assert "gave up" not in out and "!!" not in out and "(error)" not in out
    assert "· succeeded" in out


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short enough", 70, "short enough"),
        ("one two three four five six", 15, "one two three…"),
        ('{"customer_id":42,"name":"Ada Lovelace","email":"ada@example.com"}', 45,
         '{"customer_id":42,"name":"Ada Lovelace"…'),
        ("averyveryverylongwordwithoutanybreaksatall", 20, "averyveryverylongwo…"),
        ("lines\nare\njoined", 70, "lines are joined"),
    ],
)  # fmt: skip
def test_payloads_are_cut_between_words(text: str, limit: int, expected: str) -> None:
    from orchestrion.observe.trace import shorten

    assert shorten(text, limit) == expected
    assert len(shorten(text, limit)) <= limit
