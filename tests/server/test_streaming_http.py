"""Turns over HTTP: streamed as SSE, resumed with Last-Event-ID, independent of the
client, cancelled, and concurrent posts under each busy policy."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from tests.server.helpers import (
    GATE,
    GATE_STARTED,
    LONG_TEXT,
    LiveServer,
    SSEEvent,
    SSEReader,
    finished_run,
    new_conversation,
    text_of,
    wait_for,
)


def post_stream(client: httpx.Client, conversation: str, message: str, **extra: Any) -> Any:
    return client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"message": message, **extra}
    )


def test_a_streamed_turn_arrives_as_sse_in_order_and_ends_with_run_finished(
    live: LiveServer,
) -> None:
    client = live.client()
    conversation = new_conversation(client)
    with post_stream(client, conversation, "hello") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        run_id = response.headers["x-run-id"]
        assert response.headers["location"] == f"/v1/runs/{run_id}"
        reader = SSEReader(response)
        events = list(reader)
    assert reader.retry == 1000
    seqs = [e.id for e in events]
    assert seqs == list(range(1, len(events) + 1))
    assert events[0].event == "run.queued" and events[-1].event == "run.finished"
    assert events[-1].data["attributes"]["run.status"] == "succeeded"
    for e in events:  # the SSE id and event name repeat the event's own fields
        assert e.data["seq"] == e.id and e.data["type"] == e.event and e.data["run_id"] == run_id
    assert text_of(events) == LONG_TEXT
    assert sum(e.event == "text.delta" for e in events) > 1

    run = client.get(f"/v1/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["answer"] == LONG_TEXT
    assert run["conversation_id"] == conversation and run["agent"] == "chat"
    detail = client.get(f"/v1/conversations/{conversation}").json()
    assert detail["version"] == 1 and detail["state"] == "AWAITING_INPUT"
    assert [(m["role"], m["content"]) for m in detail["history"]] == [
        ("user", "hello"),
        ("assistant", LONG_TEXT),
    ]
    assert [r["id"] for r in detail["runs"]] == [run_id]


def test_a_reconnect_with_last_event_id_gets_every_later_event_exactly_once(
    live: LiveServer,
) -> None:
    client = live.client()
    conversation = new_conversation(client)
    first: list[SSEEvent] = []
    with post_stream(client, conversation, "hello") as response:
        run_id = response.headers["x-run-id"]
        for event in SSEReader(response):
            first.append(event)
            if event.event == "text.delta":
                break  # the connection drops halfway through the text
    last = first[-1].id
    assert last is not None
    # `after=0` in the URL is what the client first asked for; the header wins.
    with client.stream(
        "GET", f"/v1/runs/{run_id}/events?after=0", headers={"Last-Event-ID": str(last)}
    ) as response:
        assert response.status_code == 200
        rest = list(SSEReader(response))
    events = first + rest
    assert rest[0].id == last + 1
    assert [e.id for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert events[-1].event == "run.finished"
    assert text_of(events) == LONG_TEXT

    # The same from ?after=, and from the JSON pages (5 events per page here).
    with client.stream("GET", f"/v1/runs/{run_id}/events", params={"after": last}) as response:
        assert [e.id for e in SSEReader(response)] == [e.id for e in rest]
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.get(f"/v1/runs/{run_id}/events", params={"format": "json", "after": after})
        assert page.status_code == 200
        body = page.json()
        assert len(body["events"]) <= 5
        paged.extend(body["events"])
        after = body["next_after"]
        if body["finished"]:
            break
    assert [e["seq"] for e in paged] == [e.id for e in events]
    assert [e["type"] for e in paged] == [e.event for e in events]


def test_a_client_that_disconnects_leaves_the_turn_running_to_completion(
    live: LiveServer,
) -> None:
    client = live.client()
    conversation = new_conversation(client)
    with post_stream(client, conversation, "hello") as response:
        run_id = response.headers["x-run-id"]
        first = next(iter(SSEReader(response)))
        assert first.event == "run.queued"
    client.close()  # the connection is gone, not just the response

    other = live.client()
    run = finished_run(other, run_id)
    assert run["status"] == "succeeded" and run["answer"] == LONG_TEXT
    history = other.get(f"/v1/conversations/{conversation}").json()["history"]
    assert [m["content"] for m in history] == ["hello", LONG_TEXT]


def test_fire_and_forget_answers_202_and_the_run_can_be_followed(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    r = client.post(
        f"/v1/conversations/{conversation}/messages", json={"message": "hi", "stream": False}
    )
    assert r.status_code == 202
    run = r.json()
    assert run["status"] == "queued" and r.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["events_url"] == f"/v1/runs/{run['id']}/events"
    with client.stream("GET", run["events_url"]) as response:
        events = list(SSEReader(response))
    assert events[-1].event == "run.finished"
    assert finished_run(client, run["id"])["answer"] == "echo: hi"


def test_keep_alive_comments_flow_while_the_turn_waits(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    with post_stream(client, conversation, "block") as response:
        reader = SSEReader(response)
        events: list[SSEEvent] = []
        for event in reader:
            events.append(event)
            if event.event == "step.started" and "gate" in event.data["name"]:
                # The tool waits; let the stream idle over a few keep-alive periods.
                wait_for(lambda: GATE_STARTED.is_set(), what="the gate tool started")
                threading.Timer(0.5, GATE.set).start()
        assert "keep-alive" in reader.comments
    assert events[-1].event == "run.finished"
    assert events[-1].data["attributes"]["run.status"] == "succeeded"


def test_cancel_ends_a_running_turn_as_cancelled(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    run = client.post(
        f"/v1/conversations/{conversation}/messages", json={"message": "block", "stream": False}
    ).json()
    wait_for(GATE_STARTED.is_set, what="the gate tool started")
    r = client.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code == 202
    assert r.json()["cancel_requested"] is True
    with client.stream("GET", f"/v1/runs/{run['id']}/events") as response:
        events = list(SSEReader(response))
    assert events[-1].event == "run.finished"
    assert events[-1].data["attributes"]["run.status"] == "cancelled"
    assert not GATE.is_set()  # it ended because of the cancel, not the gate
    final = client.get(f"/v1/runs/{run['id']}").json()
    assert final["status"] == "cancelled" and final["answer"] == ""
    # A finished run: 200, unchanged.
    again = client.post(f"/v1/runs/{run['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    detail = client.get(f"/v1/conversations/{conversation}").json()
    assert detail["history"] == [] and detail["state"] == "AWAITING_INPUT"


def test_cancel_a_queued_turn_cancels_it_before_it_starts(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    url = f"/v1/conversations/{conversation}/messages"
    first = client.post(url, json={"message": "block", "stream": False}).json()
    wait_for(GATE_STARTED.is_set, what="the first turn runs")
    second = client.post(url, json={"message": "later", "stream": False}).json()
    r = client.post(f"/v1/runs/{second['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    GATE.set()
    assert finished_run(client, first["id"])["status"] == "succeeded"
    assert finished_run(client, second["id"])["status"] == "cancelled"
    users = [
        m["content"]
        for m in client.get(f"/v1/conversations/{conversation}").json()["history"]
        if m["role"] == "user"
    ]
    assert users == ["block"]


def test_enqueue_runs_concurrent_posts_one_after_the_other(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    url = f"/v1/conversations/{conversation}/messages"
    first = client.post(url, json={"message": "block one", "stream": False}).json()
    wait_for(GATE_STARTED.is_set, what="the first turn runs")
    second_events: list[SSEEvent] = []

    def stream_second() -> None:
        with live.client().stream(
            "POST", url, json={"message": "two", "busy_policy": "enqueue"}
        ) as response:
            second_events.extend(SSEReader(response))

    thread = threading.Thread(target=stream_second)
    thread.start()
    # The second waits queued behind the first, which is blocked.
    wait_for(lambda: second_events or len(_runs(client, conversation)) == 2, what="queued")
    statuses = {r["id"]: r["status"] for r in _runs(client, conversation)}
    assert statuses[first["id"]] == "running"
    assert sorted(statuses.values()) == ["queued", "running"]
    GATE.set()
    thread.join(60)
    assert second_events[-1].event == "run.finished"
    assert second_events[-1].data["attributes"]["run.status"] == "succeeded"
    one = finished_run(client, first["id"])
    two = client.get(f"/v1/runs/{second_events[0].data['run_id']}").json()
    assert one["status"] == two["status"] == "succeeded"
    assert two["started_at"] >= one["finished_at"]
    history = client.get(f"/v1/conversations/{conversation}").json()["history"]
    assert [m["content"] for m in history if m["role"] == "user"] == ["block one", "two"]
    assert history[-1]["content"] == "echo: two"


def test_reject_answers_409_while_the_conversation_is_busy(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    url = f"/v1/conversations/{conversation}/messages"
    first = client.post(url, json={"message": "block", "stream": False}).json()
    r = client.post(url, json={"message": "two", "busy_policy": "reject"})
    assert r.status_code == 409
    assert r.json()["error"]["type"] == "conversation_busy"
    assert len(_runs(client, conversation)) == 1  # nothing was queued
    GATE.set()
    assert finished_run(client, first["id"])["status"] == "succeeded"
    # Free again: the same request is accepted.
    r = client.post(url, json={"message": "two", "busy_policy": "reject", "stream": False})
    assert r.status_code == 202
    assert finished_run(client, r.json()["id"])["answer"] == "echo: two"


def test_interrupt_cancels_the_running_turn_and_answers_the_new_one(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    url = f"/v1/conversations/{conversation}/messages"
    first = client.post(url, json={"message": "block", "stream": False}).json()
    wait_for(GATE_STARTED.is_set, what="the first turn runs")
    with client.stream(
        "POST", url, json={"message": "instead", "busy_policy": "interrupt"}
    ) as response:
        assert response.status_code == 200
        events = list(SSEReader(response))
    assert events[-1].data["attributes"]["run.status"] == "succeeded"
    assert text_of(events) == "echo: instead"
    assert finished_run(client, first["id"])["status"] == "cancelled"
    assert not GATE.is_set()
    history = client.get(f"/v1/conversations/{conversation}").json()["history"]
    assert [m["content"] for m in history] == ["instead", "echo: instead"]


def test_traces_of_a_run_and_of_a_conversation_are_span_trees(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    url = f"/v1/conversations/{conversation}/messages"
    runs = []
    for message in ("block", "again"):
        GATE.set()
        runs.append(client.post(url, json={"message": message, "stream": False}).json()["id"])
        finished_run(client, runs[-1])
    # The fixture pages a run's trace by 5 events: the first page has the run's root...
    trace = client.get(f"/v1/runs/{runs[0]}/trace")
    assert trace.status_code == 200
    body = trace.json()
    assert body["id"] == runs[0] and body["last_seq"] == 5
    (root,) = body["spans"]
    assert root["run_id"] == runs[0] and root["parent_span_id"] is None
    for child in root["children"]:
        assert child["parent_span_id"] == root["span_id"]
    # ... and following `next` reads the rest: every span, each parent on its page or before.
    spans: dict[str, dict[str, Any]] = {}
    pages = 0
    url: str | None = f"/v1/runs/{runs[0]}/trace"
    while url:
        page = client.get(url).json()
        pages += 1
        for top in page["spans"]:
            assert top["parent_span_id"] is None or top["parent_span_id"] in spans
            for span in _walk(top):
                spans.setdefault(span["span_id"], {}).update(
                    {k: v for k, v in span.items() if v is not None and k != "children"}
                )
        url = page["next"]
    assert pages > 1
    names = [s["name"] for s in spans.values()]
    assert "execute_tool gate" in names and any(n.startswith("chat ") for n in names)
    assert all(s.get("end") is not None for s in spans.values())  # every span closed
    one_page = client.get(f"/v1/runs/{runs[0]}/trace?limit=5").json()
    assert one_page["next"] == f"/v1/runs/{runs[0]}/trace?limit=5&after=5"
    whole = client.get(f"/v1/conversations/{conversation}/trace").json()
    assert whole["id"] == conversation and whole["next"] is None
    assert [s["run_id"] for s in whole["spans"]] == runs  # one root per run, oldest first


def _walk(span: dict[str, Any]) -> list[dict[str, Any]]:
    return [span, *(s for c in span["children"] for s in _walk(c))]


def _runs(client: httpx.Client, conversation: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.get(f"/v1/conversations/{conversation}").json()["runs"]
    return runs
