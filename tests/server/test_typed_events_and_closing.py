"""Over real HTTP (uvicorn on loopback, both stores): SSE frames carry the typed events
(the same objects `Orchestrion.subscribe` yields, the same in JSON pages, resumable with
Last-Event-ID), and conversations are closed (tenant-checked) and expire."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from orchestrion import Agent, Orchestrion, TextDelta, parse_event
from orchestrion.observe.public import EVENT_CLASSES
from orchestrion.testing import ScriptedModel, say
from tests.server.helpers import (
    GATE,
    GATE_STARTED,
    KEY_B,
    LONG_TEXT,
    LiveServer,
    SSEEvent,
    SSEReader,
    finished_run,
    new_conversation,
    start_server,
    wait_for,
)


def stream_turn(
    client: httpx.Client, conversation: str, message: str
) -> tuple[str, list[SSEEvent]]:
    with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"message": message}
    ) as response:
        assert response.status_code == 200, response.read()
        return response.headers["x-run-id"], list(SSEReader(response))


def json_pages(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    events, after = [], 0
    while True:
        page = client.get(f"/v1/runs/{run_id}/events", params={"format": "json", "after": after})
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        after = body["next_after"]
        if body["finished"]:
            return events


def test_sse_frames_are_the_typed_events_of_subscribe(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client)
    run_id, frames = stream_turn(client, conversation, "hello")
    for frame in frames:
        typed = parse_event(frame.data)
        assert frame.event == typed.type == frame.data["type"]
        assert frame.id == typed.seq
        assert typed.model_dump(mode="json") == frame.data  # nothing lost either way
    chunks = [parse_event(f.data) for f in frames if f.event == "text.delta"]
    assert all(isinstance(c, TextDelta) for c in chunks)
    assert "".join(f.data["text"] for f in frames if f.event == "text.delta") == LONG_TEXT
    # Fields of their own beside the raw payload, which old clients still find.
    first, last = frames[0].data, frames[-1].data
    assert (first["conversation_id"], first["agent"]) == (conversation, "chat")
    assert (last["status"], last["answer"], last["error"]) == ("succeeded", LONG_TEXT, None)
    assert last["attributes"]["run.status"] == "succeeded"
    for frame in frames:
        if frame.event == "text.delta":
            assert frame.data["attributes"]["text"] == frame.data["text"]

    # The same objects in JSON pages (5 events each here), and in process.
    assert json_pages(client, run_id) == [f.data for f in frames]

    async def in_process() -> list[dict[str, Any]]:
        async with Orchestrion(live.store) as orx:
            return [e.model_dump(mode="json") async for e in orx.subscribe(run_id)]

    assert asyncio.run(in_process()) == [f.data for f in frames]

    # Resuming from the middle gives the rest, as the same objects.
    middle = frames[len(frames) // 2].id
    with client.stream(
        "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(middle)}
    ) as response:
        rest = list(SSEReader(response))
    assert [f.data for f in rest] == [f.data for f in frames if f.id and f.id > (middle or 0)]


def test_the_openapi_document_describes_the_typed_events_and_the_close(
    live: LiveServer,
) -> None:
    doc = live.client(None).get("/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    refs = [s["$ref"].rsplit("/", 1)[1] for s in schemas["Event"]["anyOf"]]
    assert refs == [c.__name__ for c in EVENT_CLASSES]
    assert schemas["TextDelta"]["properties"]["type"]["const"] == "text.delta"
    assert "text" in schemas["TextDelta"]["required"]
    assert schemas["RunFinished"]["properties"]["status"]["enum"] == [
        "queued", "running", "succeeded", "failed", "cancelled",
    ]  # fmt: skip
    items = schemas["EventPage"]["properties"]["events"]["items"]["anyOf"]
    assert [i["$ref"] for i in items] == [s["$ref"] for s in schemas["Event"]["anyOf"]]
    close = doc["paths"]["/v1/conversations/{conversation_id}/close"]["post"]
    assert set(close["responses"]) == {"200", "401", "404", "409"}
    state = schemas["ConversationOut"]["properties"]["state"]
    assert state["$ref"].endswith("/ConversationState")
    assert {"CLOSED", "EXPIRED"} <= set(schemas["ConversationState"]["enum"])


def test_a_closed_conversation_refuses_messages_and_stays_readable(live: LiveServer) -> None:
    client, other = live.client(), live.client(KEY_B)
    conversation = new_conversation(client)
    _, frames = stream_turn(client, conversation, "hello")
    assert frames[-1].data["status"] == "succeeded"

    # Another tenant's close is a 404 like an unknown id's, and changes nothing.
    theirs = other.post(f"/v1/conversations/{conversation}/close")
    unknown = client.post("/v1/conversations/conv_0000000000000000/close")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content
    assert client.get(f"/v1/conversations/{conversation}").json()["state"] == "AWAITING_INPUT"

    closed = client.post(f"/v1/conversations/{conversation}/close")
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["id"], body["state"], body["message_count"]) == (conversation, "CLOSED", 2)
    assert client.post(f"/v1/conversations/{conversation}/close").json() == body  # again: same

    for extra in ({"stream": False}, {}, {"busy_policy": "interrupt"}):
        refused = client.post(
            f"/v1/conversations/{conversation}/messages", json={"message": "more", **extra}
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["type"] == "conversation_closed"
    detail = client.get(f"/v1/conversations/{conversation}").json()
    assert detail["state"] == "CLOSED" and len(detail["runs"]) == 1
    assert [m["content"] for m in detail["history"]] == ["hello", LONG_TEXT]


def test_a_close_while_a_turn_runs_is_refused_until_it_ends(live: LiveServer) -> None:
    client = live.client()
    conversation = new_conversation(client, "gate")
    run = client.post(
        f"/v1/conversations/{conversation}/messages", json={"message": "block", "stream": False}
    ).json()
    assert GATE_STARTED.wait(30)
    busy = client.post(f"/v1/conversations/{conversation}/close")
    assert busy.status_code == 409 and busy.json()["error"]["type"] == "conversation_busy"
    assert client.get(f"/v1/runs/{run['id']}").json()["status"] == "running"  # untouched
    GATE.set()
    assert finished_run(client, run["id"])["status"] == "succeeded"
    closed = client.post(f"/v1/conversations/{conversation}/close")
    assert closed.status_code == 200 and closed.json()["state"] == "CLOSED"


def test_an_expired_conversation_answers_expired_and_refuses_messages(store_url: str) -> None:
    brief = Agent("brief", model=ScriptedModel([say("hi")]), conversation_ttl=0.3)
    server = start_server(store_url, [brief])
    try:
        client = server.client()
        conversation = new_conversation(client)
        first = client.post(
            f"/v1/conversations/{conversation}/messages", json={"message": "x", "stream": False}
        )
        assert finished_run(client, first.json()["id"])["status"] == "succeeded"
        wait_for(
            lambda: client.get(f"/v1/conversations/{conversation}").json()["state"] == "EXPIRED",
            what="the conversation expires",
        )
        refused = client.post(
            f"/v1/conversations/{conversation}/messages", json={"message": "y", "stream": False}
        )
        assert refused.status_code == 409
        assert refused.json()["error"]["type"] == "conversation_expired"
        detail = client.get(f"/v1/conversations/{conversation}").json()
        assert detail["message_count"] == 2 and len(detail["runs"]) == 1
    finally:
        server.stop()
