"""Bounded reads over HTTP, on both stores: a conversation's history and its trace come in
pages (limit, before/after cursors, a `next` URL), a run's trace too, each page bounded
whatever the conversation's size; and /health stays fast while a tenant reads its
longest conversation."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrion.server import Limits
from tests.server.helpers import (
    KEY_A,
    KEY_B,
    LiveServer,
    chat_agent,
    gate_agent,
    seed_conversation,
    start_server,
)

LIMITS = Limits(
    page_messages=10,
    max_page_messages=50,
    page_runs=4,
    max_page_runs=10,
    max_page_events=30,
    max_trace_events=100,  # 21 events per seeded run: a trace page holds 4 runs at most
)
TURNS = 60


@pytest.fixture
def seeded(store_url: str) -> Iterator[tuple[LiveServer, str, list[str]]]:
    """A server on each store, with a conversation of TURNS turns of tenant A."""
    conversation, runs = seed_conversation(store_url, turns=TURNS)
    server = start_server(store_url, [chat_agent(), gate_agent()], limits=LIMITS)
    try:
        yield server, conversation, runs
    finally:
        server.stop()


def walk(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Every page from `url`, following `next`."""
    pages = []
    next_url: str | None = url
    while next_url:
        r = client.get(next_url)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        next_url = pages[-1]["next"]
        assert len(pages) < 1000, "paging does not end"
    return pages


def test_history_pages_back_from_the_newest_and_forward_from_any_index(
    seeded: tuple[LiveServer, str, list[str]],
) -> None:
    server, conversation, _ = seeded
    client = server.client()
    first = client.get(f"/v1/conversations/{conversation}").json()
    assert first["message_count"] == 2 * TURNS
    # The default page: the newest 10 messages, oldest first, each with its index.
    assert [m["index"] for m in first["history"]] == list(range(2 * TURNS - 10, 2 * TURNS))
    assert first["history"][-1]["content"].startswith(f"answer {TURNS - 1}:")
    assert first["next"] == f"/v1/conversations/{conversation}?limit=10&before={2 * TURNS - 10}"
    assert len(first["runs"]) == 20
    # Back to the start, every message exactly once.
    pages = walk(client, f"/v1/conversations/{conversation}?limit=50")
    assert [len(p["history"]) for p in pages] == [50, 50, 20]
    indexes = [m["index"] for p in reversed(pages) for m in p["history"]]
    assert indexes == list(range(2 * TURNS))
    contents = [m["content"] for p in reversed(pages) for m in p["history"]]
    assert contents[:3] == ["question 0", contents[1], "question 1"]
    # Forward from an index, to the end.
    forward = walk(client, f"/v1/conversations/{conversation}?after=99&limit=7")
    assert [m["index"] for p in forward for m in p["history"]] == list(range(100, 2 * TURNS))
    assert forward[0]["next"] == f"/v1/conversations/{conversation}?limit=7&after=106"
    # Between two indexes.
    window = client.get(f"/v1/conversations/{conversation}?after=3&before=9&limit=50").json()
    assert [m["index"] for m in window["history"]] == [4, 5, 6, 7, 8] and window["next"] is None


def test_a_conversation_trace_pages_by_runs_with_run_id_cursors(
    seeded: tuple[LiveServer, str, list[str]],
) -> None:
    server, conversation, runs = seeded
    client = server.client()
    url = f"/v1/conversations/{conversation}/trace"
    first = client.get(url).json()
    # The default page: the newest 4 runs, one root per run, oldest first.
    assert [s["run_id"] for s in first["spans"]] == runs[-4:]
    assert first["next"] == f"{url}?limit=4&before={runs[-4]}"
    (root,) = [s for s in first["spans"] if s["run_id"] == runs[-1]]
    names = [c["name"] for c in root["children"]]
    assert names == ["queued", "chat scripted", "execute_tool lookup", "chat scripted"]
    assert root["end"] is not None and root["attributes"]["run.status"] == "succeeded"
    # Back through every run, once each: 10 runs a page, cut to 4 by the event budget.
    pages = walk(client, f"{url}?limit=10")
    assert [len(p["spans"]) for p in pages] == [4] * 15
    assert [s["run_id"] for p in reversed(pages) for s in p["spans"]] == runs
    # Forward after a run.
    forward = walk(client, f"{url}?after={runs[49]}&limit=3")
    assert [s["run_id"] for p in forward for s in p["spans"]] == runs[50:]
    assert forward[0]["next"] == f"{url}?limit=3&after={runs[52]}"
    # A cursor must be a run of this conversation, of this tenant: else 422, one message.
    _, other_runs = seed_conversation(server.store, turns=1)
    theirs, their_runs = seed_conversation(server.store, turns=1, tenant="tenant-b")
    answers = [
        client.get(f"{url}?before={cursor}").json()
        for cursor in (other_runs[0], their_runs[0], "run_nope")
    ]
    assert all(a["error"]["type"] == "invalid_parameter" for a in answers)
    assert len({a["error"]["message"] for a in answers}) == 1
    assert answers[0]["error"]["field"] == "before"
    # Another tenant reads none of it, with the body an unknown id gets.
    b = server.client(KEY_B)
    assert b.get(url).json() == b.get("/v1/conversations/conv_nope/trace").json()
    assert b.get(f"/v1/conversations/{theirs}/trace").status_code == 200


def test_a_run_trace_and_its_events_page_by_seq(
    seeded: tuple[LiveServer, str, list[str]],
) -> None:
    server, _, runs = seeded
    client = server.client()
    run = runs[7]
    page = client.get(f"/v1/runs/{run}/trace?limit=8").json()
    assert page["last_seq"] == 8 and page["next"] == f"/v1/runs/{run}/trace?limit=8&after=8"
    pages = walk(client, f"/v1/runs/{run}/trace?limit=8")
    assert [p["last_seq"] for p in pages] == [8, 16, 21]
    assert pages[-1]["next"] is None
    whole = client.get(f"/v1/runs/{run}/trace").json()  # the default page: 30 events
    assert whole["last_seq"] == 21 and whole["next"] is None
    events = client.get(f"/v1/runs/{run}/events?format=json&limit=6&after=2").json()
    assert [e["seq"] for e in events["events"]] == [3, 4, 5, 6, 7, 8]
    assert events["next_after"] == 8 and not events["finished"]
    rest = client.get(f"/v1/runs/{run}/events?format=json&after=8").json()
    assert rest["events"][-1]["type"] == "run.finished" and rest["finished"]


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/v1/conversations/{c}", "limit=0", "limit"),
        ("/v1/conversations/{c}", "limit=51", "limit"),
        ("/v1/conversations/{c}", "limit=ten", "limit"),
        ("/v1/conversations/{c}", "before=-1", "before"),
        ("/v1/conversations/{c}", "after=x", "after"),
        ("/v1/conversations/{c}/trace", "limit=11", "limit"),
        ("/v1/conversations/{c}/trace", "after=%00", "after"),
        ("/v1/runs/{r}/trace", "limit=31", "limit"),
        ("/v1/runs/{r}/trace", "after=1.5", "after"),
        ("/v1/runs/{r}/events", "format=json&limit=31", "limit"),
    ],
)
def test_paging_parameters_out_of_range_answer_422_naming_them(
    seeded: tuple[LiveServer, str, list[str]], path: str, query: str, field: str
) -> None:
    server, conversation, runs = seeded
    r = server.client().get(f"{path.format(c=conversation, r=runs[0])}?{query}")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_parameter" and error["field"] == field
    assert field in error["message"]
    if field == "limit":
        assert str(error["limit"]) in error["message"]


# ---- /health while large reads are in flight ---------------------------------------------

LONG_TURNS = 2000
READERS = 5


def test_health_stays_fast_while_large_reads_are_in_flight(store_url: str) -> None:
    """Five clients each read a 2,000-turn conversation (20 MB of trace) page by page,
    at the largest page sizes, while /health is polled.

    No absolute timing is asserted (the machine is shared and noisy). What is asserted
    is relative and generous: /health answered many times *while* the heavy reads were in
    flight; its slowest answer took under a fifth of the time the heavy reads took; and
    its median answer under a quarter of a heavy page's median. Before reads were paged
    and kept off the event loop, each such read was one 19 MB response built on the loop
    and /health waited for them: its latency was the heavy reads' duration itself (8.4 s
    measured), a ratio near 1. Paged but still read and rendered on the loop, /health
    waits for the pages in progress: a median near a page's (measured: 150 ms for pages
    of 200 ms on SQLite). Off the loop: 5 ms (SQLite) to 16 ms (PostgreSQL), for pages of
    over 100 ms, and at most 0.1 s while the readers read for 4.5 s."""
    conversation, runs = seed_conversation(store_url, turns=LONG_TURNS)
    server = start_server(store_url, [chat_agent()])  # the default limits
    try:
        limits = server.limits
        seen_runs: list[set[str]] = [set() for _ in range(READERS)]
        seen_messages = [0] * READERS
        largest = [0] * READERS
        page_latencies: list[float] = []
        failures: list[BaseException] = []

        def get(i: int, c: httpx.Client, url: str) -> dict[str, Any]:
            sent = time.monotonic()
            r = c.get(url)
            page_latencies.append(time.monotonic() - sent)
            assert r.status_code == 200, r.text[:200]
            largest[i] = max(largest[i], len(r.content))
            page: dict[str, Any] = r.json()
            return page

        def read(i: int) -> None:
            headers = {"Authorization": f"Bearer {KEY_A}"}
            try:
                with httpx.Client(base_url=server.url, headers=headers, timeout=120) as c:
                    url: str | None = (
                        f"/v1/conversations/{conversation}/trace?limit={limits.max_page_runs}"
                    )
                    while url:
                        page = get(i, c, url)
                        seen_runs[i].update(s["run_id"] for s in page["spans"])
                        url = page["next"]
                    url = f"/v1/conversations/{conversation}?limit={limits.max_page_messages}"
                    while url:
                        page = get(i, c, url)
                        seen_messages[i] += len(page["history"])
                        url = page["next"]
            except BaseException as exc:
                failures.append(exc)

        readers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
        health: list[float] = []
        with httpx.Client(base_url=server.url, timeout=120) as probe:
            probe.get("/health")  # connected
            started = time.monotonic()
            for t in readers:
                t.start()
            while any(t.is_alive() for t in readers):
                sent = time.monotonic()
                assert probe.get("/health").status_code == 200
                if any(t.is_alive() for t in readers):  # still in flight when it answered
                    health.append(time.monotonic() - sent)
                time.sleep(0.02)
            heavy = time.monotonic() - started
        for t in readers:
            t.join()
        assert not failures, failures[0]
    finally:
        server.stop()
    # Every reader read everything, in pages of bounded size.
    assert all(s == set(runs) for s in seen_runs)
    assert seen_messages == [2 * LONG_TURNS] * READERS
    assert max(largest) < 5_000_000, max(largest)
    # /health answered throughout, each time far faster than the heavy reads took.
    slowest, typical = max(health), statistics.median(health)
    page = statistics.median(page_latencies)
    measured = (
        f"/health took up to {slowest:.3f} s (median {typical:.3f} s) while {READERS} "
        f"readers read for {heavy:.3f} s (median page {page:.3f} s)"
    )
    assert len(health) >= 10, measured
    assert slowest < heavy / 5, measured
    assert typical < page / 4, measured


def test_the_openapi_document_describes_the_paging_parameters(
    seeded: tuple[LiveServer, str, list[str]],
) -> None:
    server, _, _ = seeded
    doc = server.client(None).get("/v1/openapi.json").json()

    def params(path: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}

    detail = params("/v1/conversations/{conversation_id}")
    assert detail["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": LIMITS.max_page_messages,
        "default": LIMITS.page_messages,
    }
    assert {"before", "after"} <= set(detail)
    trace = params("/v1/conversations/{conversation_id}/trace")
    assert trace["limit"]["schema"]["maximum"] == LIMITS.max_page_runs
    assert trace["before"]["schema"] == {"type": "string"}
    assert params("/v1/runs/{run_id}/trace")["limit"]["schema"]["maximum"] == 30
    schemas = doc["components"]["schemas"]
    assert "next" in schemas["ConversationDetail"]["properties"]
    assert "index" in schemas["HistoryMessageOut"]["properties"]
    assert {"next", "last_seq"} <= set(schemas["RunTraceOut"]["properties"])
    run_trace = doc["paths"]["/v1/runs/{run_id}/trace"]["get"]["responses"]["200"]
    assert run_trace["content"]["application/json"]["schema"]["$ref"].endswith("/RunTraceOut")
