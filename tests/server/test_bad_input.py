"""Bad input answers a clear 4xx on every endpoint, never a 5xx: explicit cases, then
property-based fuzzing of bodies, ids, query parameters and headers."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrion.server import Limits
from tests.server.helpers import (
    KEY_A,
    LiveServer,
    chat_agent,
    finished_run,
    gate_agent,
    new_conversation,
    start_server,
)
from tests.store.pg import fresh_schema
from tests.store.pg import store_url as postgres_url

# The fixture `live` has max_body_bytes=4096 and max_message_chars=500 (conftest.py).


@pytest.fixture
def conversation(live: LiveServer) -> str:
    return new_conversation(live.client(), "gate")


def post_raw(live: LiveServer, path: str, content: bytes, **headers: str) -> httpx.Response:
    return live.client().post(
        path, content=content, headers={"Content-Type": "application/json", **headers}
    )


def error_of(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/json"
    error: dict[str, Any] = r.json()["error"]
    return error


@pytest.mark.parametrize(
    "content",
    [b"{", b'{"message": "x",}', b"not json", b"\xff\xfe{}", b'{"message": NaN}', b"[" * 3000],
)
def test_malformed_json_answers_400(live: LiveServer, conversation: str, content: bytes) -> None:
    r = post_raw(live, f"/v1/conversations/{conversation}/messages", content)
    assert r.status_code == 400
    error = error_of(r)
    assert error["type"] == "malformed_json" and "JSON" in error["message"]


def test_an_empty_body_answers_400_where_a_body_is_required(
    live: LiveServer, conversation: str
) -> None:
    r = post_raw(live, f"/v1/conversations/{conversation}/messages", b"")
    assert r.status_code == 400 and "empty" in error_of(r)["message"]
    # Creating a conversation needs no body at all.
    assert post_raw(live, "/v1/conversations", b"").status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"message": "hi", "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"message": 42}, "message", "valid string"),
        ({"message": None}, "message", "valid string"),
        ({"message": ["hi"]}, "message", "valid string"),
        ({"message": "hi", "stream": "true"}, "stream", "valid boolean"),
        ({"message": "hi", "stream": 1}, "stream", "valid boolean"),
        ({"message": "hi", "busy_policy": "sometimes"}, "busy_policy", "'enqueue'"),
        ({"message": "hi", "agent": 7}, "agent", "valid string"),
        ({}, "message", "Field required"),
        (["message", "hi"], "body", "valid dictionary"),
        ("hi", "body", "valid dictionary"),
    ],
)
def test_wrong_types_and_unknown_fields_answer_422_naming_the_field(
    live: LiveServer, conversation: str, body: Any, field: str, says: str
) -> None:
    r = live.client().post(f"/v1/conversations/{conversation}/messages", json=body)
    assert r.status_code == 422, r.text
    error = error_of(r)
    assert error["type"] == "invalid_body"
    assert f"{field}: " in error["message"] and says in error["message"]
    assert any(says in e["msg"] for e in error["errors"])


def test_create_conversation_validates_its_body_too(live: LiveServer) -> None:
    client = live.client()
    r = client.post("/v1/conversations", json={"agent": "gate", "id": "mine"})
    assert r.status_code == 422 and "id: Extra inputs" in error_of(r)["message"]
    r = client.post("/v1/conversations", json={"agent": "nobody"})
    assert r.status_code == 422
    error = error_of(r)
    assert error["type"] == "unknown_agent" and "chat, gate" in error["message"]
    r = client.post("/v1/conversations", json={"agent": "gate"})
    assert r.status_code == 201 and r.json()["agent"] == "gate"
    assert r.headers["location"] == f"/v1/conversations/{r.json()['id']}"
    assert client.post("/v1/conversations").json()["agent"] == "chat"  # the default


def test_a_message_over_the_limit_answers_422_with_the_limit(
    live: LiveServer, conversation: str
) -> None:
    client = live.client()
    url = f"/v1/conversations/{conversation}/messages"
    r = client.post(url, json={"message": "x" * 501})
    assert r.status_code == 422
    error = error_of(r)
    assert error["type"] == "message_too_long" and error["limit"] == 500
    assert "501" in error["message"] and "500" in error["message"]
    ok = client.post(url, json={"message": "x" * 500, "stream": False})
    assert ok.status_code == 202
    assert finished_run(client, ok.json()["id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("message", "says"),
    [("", "empty"), ("   \n", "empty"), ("a\x00b", "NUL"), ("a\ud800b", "surrogate")],
)
def test_messages_that_are_not_text_answer_422(
    live: LiveServer, conversation: str, message: str, says: str
) -> None:
    body = json.dumps({"message": message}).encode()  # ASCII escapes survive the trip
    r = post_raw(live, f"/v1/conversations/{conversation}/messages", body)
    assert r.status_code == 422
    assert says in error_of(r)["message"]
    assert live.client().get(f"/v1/conversations/{conversation}").json()["runs"] == []


def test_an_unknown_agent_in_a_message_answers_422(live: LiveServer, conversation: str) -> None:
    r = live.client().post(
        f"/v1/conversations/{conversation}/messages", json={"message": "hi", "agent": "ghost"}
    )
    assert r.status_code == 422 and error_of(r)["type"] == "unknown_agent"


def test_a_body_over_the_size_limit_answers_413(live: LiveServer, conversation: str) -> None:
    url = f"/v1/conversations/{conversation}/messages"
    big = json.dumps({"message": "x" * 5000}).encode()
    r = post_raw(live, url, big)  # declared with Content-Length
    assert r.status_code == 413
    assert error_of(r)["limit"] == 4096 and "4096 bytes" in error_of(r)["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        yield b'{"message": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = live.client().post(url, content=chunked())
    assert r.status_code == 413
    r = live.client().post("/v1/conversations", content=b" " * 5000)
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("after=-1", {}, "after"),
        ("after=abc", {}, "after"),
        ("after=1.5", {}, "after"),
        ("after=" + "9" * 30, {}, "after"),
        ("", {"Last-Event-ID": "x"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "-3"}, "Last-Event-ID"),
        ("format=xml", {}, "format"),
    ],
)
def test_bad_event_parameters_answer_422(
    live: LiveServer, conversation: str, query: str, headers: dict[str, str], field: str
) -> None:
    client = live.client()
    run = client.post(
        f"/v1/conversations/{conversation}/messages", json={"message": "hi", "stream": False}
    ).json()
    r = client.get(f"/v1/runs/{run['id']}/events?{query}", headers=headers)
    assert r.status_code == 422
    error = error_of(r)
    assert error["type"] == "invalid_parameter" and error["field"] == field


def test_unknown_routes_and_methods_answer_json_4xx(live: LiveServer) -> None:
    client = live.client()
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["type"] == "not_found"
    r = client.delete("/v1/conversations")
    assert r.status_code == 405 and error_of(r)["type"] == "method_not_allowed"
    r = client.get(f"/v1/runs/{'r' * 5000}")  # longer than any id: not found
    assert r.status_code == 404 and error_of(r)["message"] == "no such run"


# ---- property-based fuzzing ----------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = JSON_VALUES | st.sampled_from(
    ["enqueue", "reject", "interrupt", "gate", "chat", "", "x" * 600, "\x00", "\ud800"]
)
MESSAGE_BODIES = st.dictionaries(
    st.sampled_from(["message", "agent", "stream", "busy_policy", "extra", "Message"]),
    FIELD_VALUES,
    max_size=5,
)
RAW_BODIES = (
    st.binary(max_size=200)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | MESSAGE_BODIES.map(lambda v: json.dumps(v).encode())
    | MESSAGE_BODIES.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "replace"))
    | st.sampled_from([b"NaN", b"1e999999", b'{"message": 1' + b"0" * 5000 + b"}", b"\x00"])
)
IDS = st.text(max_size=300) | st.sampled_from(["..", ".", "%", "run_", "conv_", "/", "?"])
ASCII_HEADER = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=30).map(str.strip)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        db: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
        yield f"sqlite:///{db}"
    else:
        with fresh_schema("fuzz") as schema:
            yield postgres_url(schema)


@pytest.fixture(scope="module")
def fuzz_live(fuzz_store: str) -> Iterator[tuple[LiveServer, str, str]]:
    """One server per store for every example (a fresh one per example would be too slow)."""
    server = start_server(
        fuzz_store,
        [chat_agent(), gate_agent()],
        limits=Limits(max_body_bytes=4096, max_message_chars=500, keepalive_seconds=0.05),
        default_agent="gate",
    )
    try:
        client = server.client()
        conversation = new_conversation(client, "gate")
        run = client.post(
            f"/v1/conversations/{conversation}/messages", json={"message": "x", "stream": False}
        ).json()["id"]
        finished_run(client, run)
        yield server, conversation, run
    finally:
        server.stop()


FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BODY_STATUSES = {200, 201, 202, 400, 409, 413, 422}


@FUZZ
@given(body=RAW_BODIES, endpoint=st.sampled_from(["messages", "conversations", "cancel"]))
def test_fuzzed_bodies_never_cause_a_5xx(
    fuzz_live: tuple[LiveServer, str, str], body: bytes, endpoint: str
) -> None:
    server, conversation, run = fuzz_live
    path = {
        "messages": f"/v1/conversations/{conversation}/messages",
        "conversations": "/v1/conversations",
        "cancel": f"/v1/runs/{run}/cancel",
    }[endpoint]
    client = server.client()
    # A valid message streams its turn: the fuzz agent answers at once, read it all.
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    client.close()
    server.clients.remove(client)
    assert r.status_code in BODY_STATUSES, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"]["message"]


@FUZZ
@given(
    id=IDS,
    template=st.sampled_from(
        [
            "/v1/runs/{}",
            "/v1/runs/{}/events?format=json",
            "/v1/runs/{}/trace",
            "/v1/conversations/{}",
            "/v1/conversations/{}/trace",
        ]
    ),
)
def test_fuzzed_ids_answer_json_404_or_200_never_a_5xx(
    fuzz_live: tuple[LiveServer, str, str], id: str, template: str
) -> None:
    server, _, _ = fuzz_live
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        r = c.get(template.format(quote(id, safe="")))
        cancel = c.post(f"/v1/runs/{quote(id, safe='')}/cancel")
    # (405: an id of "." or ".." is a dot segment, so the URL names another route: for
    # /v1/runs/., the list of runs.)
    assert r.status_code in {200, 404, 405}, (r.status_code, r.text[:300])
    assert cancel.status_code in {200, 202, 404, 405}, (cancel.status_code, cancel.text[:300])
    listed = id == "." and template == "/v1/runs/{}"
    assert r.json()["error" if r.status_code >= 400 else "runs" if listed else "id"]


@FUZZ
@given(
    after=st.none() | st.text(max_size=25) | st.integers(-5, 10**20).map(str),
    last_event_id=st.none() | ASCII_HEADER,
    fmt=st.none() | st.sampled_from(["json", "sse", "JSON", "", "xml"]) | st.text(max_size=8),
    authorization=st.none() | ASCII_HEADER | ASCII_HEADER.map(lambda t: f"Bearer {t}".strip()),
)
def test_fuzzed_query_parameters_and_headers_never_cause_a_5xx(
    fuzz_live: tuple[LiveServer, str, str],
    after: str | None,
    last_event_id: str | None,
    fmt: str | None,
    authorization: str | None,
) -> None:
    server, _, run = fuzz_live
    params = {k: v for k, v in (("after", after), ("format", fmt)) if v is not None}
    headers = {"Authorization": authorization or "", "Last-Event-ID": last_event_id or ""}
    headers = {k: v for k, v in headers.items() if v}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get(f"/v1/runs/{run}/events", params=params, headers=headers)
        authed = c.get(
            f"/v1/runs/{run}/events",
            params=params,
            headers={**headers, "Authorization": f"Bearer {KEY_A}"},
        )
    assert r.status_code in {200, 401, 422}, (r.status_code, r.text[:300])
    assert authed.status_code in {200, 422}, (authed.status_code, authed.text[:300])


PAGING = st.none() | st.text(max_size=25) | st.integers(-5, 10**20).map(str)


@FUZZ
@given(
    template=st.sampled_from(
        [
            "/v1/conversations/{conversation}",
            "/v1/conversations/{conversation}/trace",
            "/v1/runs/{run}/trace",
            "/v1/runs/{run}/events?format=json",
        ]
    ),
    limit=PAGING,
    before=PAGING | st.just("{run}"),
    after=PAGING | st.just("{run}"),
)
def test_fuzzed_paging_parameters_answer_200_or_422_never_a_5xx(
    fuzz_live: tuple[LiveServer, str, str],
    template: str,
    limit: str | None,
    before: str | None,
    after: str | None,
) -> None:
    server, conversation, run = fuzz_live
    params = {
        k: v.format(run=run) if v == "{run}" else v
        for k, v in (("limit", limit), ("before", before), ("after", after))
        if v is not None
    }
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"}) as c:
        r = c.get(template.format(conversation=conversation, run=run), params=params)
    assert r.status_code in {200, 422}, (r.status_code, r.text[:300])
    if r.status_code == 422:
        error = r.json()["error"]
        assert error["type"] == "invalid_parameter"
        assert error["field"] in params, error
