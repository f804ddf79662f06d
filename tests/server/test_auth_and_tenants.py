"""API keys and tenants: 401 without a valid key; another tenant's ids answer exactly
like unknown ids (404, same body) on every endpoint, and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.server.helpers import (
    KEY_A,
    KEY_B,
    LiveServer,
    SSEReader,
    finished_run,
    new_conversation,
)

# (method, path template, body): every endpoint that takes an id.
RUN_ENDPOINTS = [
    ("GET", "/v1/runs/{id}", None),
    ("GET", "/v1/runs/{id}/events", None),
    ("GET", "/v1/runs/{id}/events?format=json", None),
    ("GET", "/v1/runs/{id}/events?after=3", None),
    ("POST", "/v1/runs/{id}/cancel", None),
    ("GET", "/v1/runs/{id}/trace", None),
]
CONVERSATION_ENDPOINTS = [
    ("GET", "/v1/conversations/{id}", None),
    ("GET", "/v1/conversations/{id}/trace", None),
    ("POST", "/v1/conversations/{id}/messages", {"message": "steal", "stream": False}),
    ("POST", "/v1/conversations/{id}/messages", {"message": "steal"}),
    (
        "POST",
        "/v1/conversations/{id}/messages",
        {"message": "steal", "busy_policy": "interrupt"},
    ),
    ("POST", "/v1/conversations/{id}/close", None),
]
ALL_V1 = [
    ("POST", "/v1/conversations", {}),
    *RUN_ENDPOINTS,
    *CONVERSATION_ENDPOINTS,
]


def call(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    return client.request(method, path, json=body)


def test_another_tenants_ids_answer_404_exactly_like_unknown_ids(live: LiveServer) -> None:
    a, b = live.client(KEY_A), live.client(KEY_B)
    conversation = new_conversation(a, "gate")
    with a.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"message": "hi"}
    ) as response:
        run_id = response.headers["x-run-id"]
        list(SSEReader(response))
    before = a.get(f"/v1/conversations/{conversation}").json()

    for endpoints, real_id, unknown_id in (
        (RUN_ENDPOINTS, run_id, "run_0000000000000000"),
        (CONVERSATION_ENDPOINTS, conversation, "conv_0000000000000000"),
    ):
        for method, template, body in endpoints:
            theirs = call(b, method, template.format(id=real_id), body)
            unknown_to_b = call(b, method, template.format(id=unknown_id), body)
            unknown_to_a = call(a, method, template.format(id=unknown_id), body)
            assert theirs.status_code == 404, (method, template, theirs.text)
            assert theirs.content == unknown_to_b.content == unknown_to_a.content
            assert theirs.headers["content-type"] == unknown_to_a.headers["content-type"]
            assert theirs.json()["error"]["type"] == "not_found"

    # Nothing of tenant A changed: no run was added, cancelled or interrupted.
    after = a.get(f"/v1/conversations/{conversation}").json()
    assert after == before
    assert a.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded"
    # And A itself sees everything.
    for method, template, _ in RUN_ENDPOINTS:
        if method == "GET":
            assert a.get(template.format(id=run_id)).status_code == 200, template


def test_each_tenant_creates_and_reads_its_own_conversations(live: LiveServer) -> None:
    a, b = live.client(KEY_A), live.client(KEY_B)
    mine, theirs = new_conversation(a, "gate"), new_conversation(b, "gate")
    for client, own, other in ((a, mine, theirs), (b, theirs, mine)):
        r = client.post(f"/v1/conversations/{own}/messages", json={"message": "x", "stream": False})
        assert r.status_code == 202
        assert finished_run(client, r.json()["id"])["status"] == "succeeded"
        assert client.get(f"/v1/conversations/{own}").status_code == 200
        assert client.get(f"/v1/conversations/{other}").status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-key-0123456789",
        f"Basic {KEY_A}",
        f"Bearer {KEY_A}x",
        f"Bearer {KEY_A[:-1]}",
        f"{KEY_A}",
        b"Bearer \x80\xff-not-ascii",
    ],
)
def test_no_key_or_a_wrong_key_answers_401_on_every_v1_endpoint(
    live: LiveServer, authorization: str | bytes | None
) -> None:
    a = live.client(KEY_A)
    conversation = new_conversation(a)
    headers: dict[str, Any] = {} if authorization is None else {"Authorization": authorization}
    client = live.client(None)
    bodies = set()
    for method, template, body in ALL_V1:
        r = client.request(method, template.format(id=conversation), json=body, headers=headers)
        assert r.status_code == 401, (template, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "unauthorized"
        bodies.add(r.content)
    assert len(bodies) == 1
    # Nothing was posted.
    assert a.get(f"/v1/conversations/{conversation}").json()["runs"] == []


def test_the_bearer_scheme_is_case_insensitive(live: LiveServer) -> None:
    client = live.client(None)
    r = client.post("/v1/conversations", headers={"Authorization": f"bearer {KEY_B}"})
    assert r.status_code == 201


def test_health_ready_and_openapi_need_no_key(live: LiveServer) -> None:
    client = live.client(None)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    doc = client.get("/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in (
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/trace",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/runs/{run_id}/cancel",
        "/v1/runs/{run_id}/trace",
        "/health",
        "/ready",
    ):
        assert path in paths
    schemas = doc["components"]["schemas"]
    post = schemas["PostMessage"]
    assert post["additionalProperties"] is False
    assert set(post["properties"]) == {"message", "agent", "stream", "busy_policy"}
    message_op = paths["/v1/conversations/{conversation_id}/messages"]["post"]
    assert {"200", "202", "400", "401", "404", "409", "413", "422"} <= set(message_op["responses"])
    assert "text/event-stream" in message_op["responses"]["200"]["content"]
    # Every $ref resolves.
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    refs.append(v)
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(doc)
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
