"""GET /v1/runs (newest first, filtered, paged), GET /v1/breakers, GET /v1/whoami, and the
local console's operator key, over real HTTP on both stores, with a few hundred runs of
two tenants in several statuses."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel, say
from orchestrion.observe.events import new_id
from orchestrion.server import create_app
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, RunCompletion, RunStatus, Store
from tests.server.helpers import KEY_A, KEY_B, KEYS, LiveServer, start_app, start_server
from tests.store.pg import fresh_schema
from tests.store.pg import store_url as postgres_url

OPERATOR_KEY = "operator-key-for-every-tenant-0123"


@dataclass
class Seeded:
    """What the seed wrote, newest last: (run id, tenant, agent, conversation, status)."""

    runs: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    conversations: dict[str, str] = field(default_factory=dict)  # id -> tenant
    middle: float = 0.0  # a time between the first and the second batch

    def ids(self, **match: str) -> list[str]:
        """Run ids matching the fields given, newest first."""
        names = ("id", "tenant", "agent", "conversation", "status")
        rows = [dict(zip(names, r, strict=True)) for r in self.runs]
        return [r["id"] for r in reversed(rows) if all(r[k] == v for k, v in match.items())]


async def _run(
    store: Store, seeded: Seeded, conversation: str, tenant: str, agent: str, status: str
) -> None:
    run_id = new_id("run")
    queued = EventRecord(run_id, 1, "run.queued", "queued", "0" * 32, "1" * 16, None, time.time())
    await store.create_run(
        run_id=run_id,
        conversation_id=conversation,
        tenant=tenant,
        agent=agent,
        input={"message": {"role": "user", "content": f"question for {run_id}"}},
        trace_id="0" * 32,
        deadline_at=None,
        busy_policy="enqueue",
        event=queued,
    )
    if status == "cancelled":
        await store.request_cancel(run_id, tenant=tenant)
    elif status != "queued":
        lease = await store.claim(
            run_id, owner="seed", expected_epoch=0, lease_seconds=60, now=time.time()
        )
        assert lease is not None
        error = {"type": "ModelError", "message": "the model failed"}
        await store.complete_run(
            lease,
            RunCompletion(
                status,  # type: ignore[arg-type]
                {"answer": f"answer of {run_id}"} if status == "succeeded" else None,
                error if status == "failed" else None,
                [],
                "AWAITING_INPUT",
                [],
            ),
            now=time.time(),
        )
    seeded.runs.append((run_id, tenant, agent, conversation, status))


async def _seed(store_url: str) -> Seeded:
    seeded = Seeded()
    cycle = ["succeeded", "succeeded", "failed", "succeeded", "cancelled"]
    async with open_store(store_url) as store:
        for batch in range(2):
            for tenant, agents, per_agent in (
                ("tenant-a", ("chat", "gate"), 60),
                ("tenant-b", ("chat",), 30),
            ):
                for agent in agents:
                    conversation = new_id("conv")
                    await store.ensure_conversation(
                        conversation,
                        tenant=tenant,
                        agent=agent,
                        ttl_seconds=1e6,
                        state="AWAITING_INPUT",
                    )
                    seeded.conversations[conversation] = tenant
                    for n in range(per_agent):
                        status = cycle[n % len(cycle)]
                        await _run(store, seeded, conversation, tenant, agent, status)
                    if batch == 1:  # one run left queued at the end of each
                        await _run(store, seeded, conversation, tenant, agent, "queued")
            if batch == 0:
                await asyncio.sleep(0.01)
                seeded.middle = time.time()
                await asyncio.sleep(0.01)
    return seeded


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def seeded_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, Seeded]]:
    """One seeded store of each backend for the whole module (the tests only read, except
    where they say so and update `Seeded`)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            store_url = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'store.db'}"
        else:
            store_url = postgres_url(stack.enter_context(fresh_schema("t")))
        seeded = asyncio.run(_seed(store_url))
        chat = Agent("chat", model=ScriptedModel([say("hi")]))
        server = start_app(
            store_url,
            lambda orx: create_app(orx, keys=KEYS, operator_keys=[OPERATOR_KEY]),
            [chat],
        )
        stack.callback(server.stop)
        yield server, seeded


def all_pages(client: httpx.Client, url: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every run from `url`, following `next`; and how many pages that took."""
    runs: list[dict[str, Any]] = []
    pages = 0
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        runs.extend(body["runs"])
        pages += 1
        if body["next"] is None:
            return runs, pages
        assert body["runs"], "a page with a next page is not empty"
        response = client.get(body["next"])


def test_a_tenant_pages_through_its_runs_newest_first_and_only_its_own(
    seeded_server: tuple[LiveServer, Seeded],
) -> None:
    server, seeded = seeded_server
    a, b = server.client(KEY_A), server.client(KEY_B)
    runs, pages = all_pages(a, "/v1/runs", limit=37)
    assert [r["id"] for r in runs] == seeded.ids(tenant="tenant-a")
    assert len(runs) == 242 and pages == 7
    assert {r["tenant"] for r in runs} == {"tenant-a"}
    first = runs[0]
    assert first["message"] == f"question for {first['id']}"
    assert first["status"] == "queued" and first["events_url"] == f"/v1/runs/{first['id']}/events"
    failed = next(r for r in runs if r["status"] == "failed")
    assert failed["error"] == {"type": "ModelError", "message": "the model failed"}

    theirs, _ = all_pages(b, "/v1/runs", limit=200)
    assert [r["id"] for r in theirs] == seeded.ids(tenant="tenant-b")
    assert not {r["id"] for r in runs} & {r["id"] for r in theirs}
    # The default page size, and no next page once everything is listed.
    body = b.get("/v1/runs").json()
    assert len(body["runs"]) == 50 and body["next"] is not None
    assert b.get("/v1/runs", params={"limit": 200}).json()["next"] is None


@pytest.mark.parametrize(
    "params, match",
    [
        ({"status": "failed"}, {"status": "failed"}),
        ({"status": "queued"}, {"status": "queued"}),
        ({"agent": "gate"}, {"agent": "gate"}),
        ({"agent": "gate", "status": "cancelled"}, {"agent": "gate", "status": "cancelled"}),
        ({"agent": "nobody"}, {"agent": "nobody"}),
    ],
)
def test_filters_and_their_pages_keep_the_filters(
    seeded_server: tuple[LiveServer, Seeded], params: dict[str, str], match: dict[str, str]
) -> None:
    server, seeded = seeded_server
    runs, _ = all_pages(server.client(KEY_A), "/v1/runs", limit=9, **params)
    assert [r["id"] for r in runs] == seeded.ids(tenant="tenant-a", **match)


def test_several_statuses_a_conversation_and_a_time(
    seeded_server: tuple[LiveServer, Seeded],
) -> None:
    server, seeded = seeded_server
    a = server.client(KEY_A)
    runs, _ = all_pages(a, "/v1/runs", status="failed, cancelled", limit=50)
    expected = [
        i
        for i in seeded.ids(tenant="tenant-a")
        if i in set(seeded.ids(status="failed")) or i in set(seeded.ids(status="cancelled"))
    ]
    assert [r["id"] for r in runs] == expected

    conversation = next(c for c, t in seeded.conversations.items() if t == "tenant-a")
    runs, pages = all_pages(a, "/v1/runs", conversation=conversation, limit=25)
    assert [r["id"] for r in runs] == seeded.ids(conversation=conversation) and pages == 3

    # since: the runs created after a time (the second batch only), also paged.
    newer = seeded.ids(tenant="tenant-a")[:122]
    runs, pages = all_pages(a, "/v1/runs", since=str(seeded.middle), limit=40)
    assert [r["id"] for r in runs] == newer and pages == 4
    assert all(r["created_at"] >= seeded.middle for r in runs)


def test_another_tenants_ids_are_unknown_to_the_list(
    seeded_server: tuple[LiveServer, Seeded],
) -> None:
    server, seeded = seeded_server
    a, b = server.client(KEY_A), server.client(KEY_B)
    theirs = seeded.ids(tenant="tenant-a")[5]
    their_conversation = next(c for c, t in seeded.conversations.items() if t == "tenant-a")
    # A conversation filter of another tenant lists nothing, like an unknown one.
    for conversation in (their_conversation, "conv_0000000000000000"):
        assert b.get("/v1/runs", params={"conversation": conversation}).json() == {
            "runs": [],
            "next": None,
        }
    # A cursor of another tenant's run is refused exactly like an unknown run id.
    refused = b.get("/v1/runs", params={"before": theirs})
    unknown = b.get("/v1/runs", params={"before": "run_0000000000000000"})
    assert refused.status_code == unknown.status_code == 422
    assert refused.content == unknown.content
    assert refused.json()["error"]["field"] == "before"
    # ... and works for its owner.
    assert (
        a.get("/v1/runs", params={"before": theirs}).json()["runs"][0]["id"]
        == (seeded.ids(tenant="tenant-a")[6])
    )


@pytest.mark.parametrize(
    "params, field",
    [
        ({"status": "finished"}, "status"),
        ({"status": ","}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "-5"}, "since"),
        ({"since": "nan"}, "since"),
        ({"agent": "x" * 201}, "agent"),
        ({"conversation": "a\tb"}, "conversation"),
        ({"before": "x" * 201}, "before"),
    ],
)
def test_bad_parameters_answer_422_naming_them(
    seeded_server: tuple[LiveServer, Seeded], params: dict[str, str], field: str
) -> None:
    server, _ = seeded_server
    response = server.client(KEY_A).get("/v1/runs", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_parameter" and error["field"] == field
    assert field in error["message"]


def test_empty_parameters_are_no_filter(seeded_server: tuple[LiveServer, Seeded]) -> None:
    server, seeded = seeded_server
    params = {"status": "", "agent": " ", "conversation": "", "since": ""}
    body = server.client(KEY_A).get("/v1/runs", params=params).json()
    assert [r["id"] for r in body["runs"]] == seeded.ids(tenant="tenant-a")[:50]


def test_the_new_endpoints_need_a_key(seeded_server: tuple[LiveServer, Seeded]) -> None:
    server, _ = seeded_server
    anonymous = server.client(None)
    for path in ("/v1/runs", "/v1/breakers", "/v1/whoami"):
        response = anonymous.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert server.client("not-a-key-but-long-enough").get(path).status_code == 401


def test_whoami_and_breakers_for_any_valid_key(seeded_server: tuple[LiveServer, Seeded]) -> None:
    server, _ = seeded_server
    me = server.client(KEY_B).get("/v1/whoami").json()
    assert me == {
        "tenant": "tenant-b",
        "all_tenants": False,
        "agents": ["chat"],
        "run_statuses": list(get_args(RunStatus)),  # whatever statuses the engine has
    }
    assert {"queued", "running", "succeeded", "failed", "cancelled"} <= set(me["run_statuses"])
    for key in (KEY_A, KEY_B, OPERATOR_KEY):
        body = server.client(key).get("/v1/breakers").json()
        assert body["breakers"] == [] and body["now"] > 0


def test_the_operator_key_reads_every_tenant_and_starts_nothing(
    seeded_server: tuple[LiveServer, Seeded],
) -> None:
    server, seeded = seeded_server
    operator = server.client(OPERATOR_KEY)
    assert operator.get("/v1/whoami").json()["all_tenants"] is True
    runs, _ = all_pages(operator, "/v1/runs", limit=200)
    assert [r["id"] for r in runs] == seeded.ids()
    assert {r["tenant"] for r in runs} == {"tenant-a", "tenant-b"}
    runs, _ = all_pages(operator, "/v1/runs", status="failed", limit=200)
    assert [r["id"] for r in runs] == seeded.ids(status="failed")
    theirs = seeded.ids(tenant="tenant-b")[1]
    assert operator.get(f"/v1/runs/{theirs}").json()["id"] == theirs
    assert operator.get(f"/v1/runs/{theirs}/trace").status_code == 200
    conversation = next(c for c, t in seeded.conversations.items() if t == "tenant-b")
    assert operator.get(f"/v1/conversations/{conversation}").json()["id"] == conversation
    # It may cancel a run (the console's button) ...
    queued = seeded.ids(tenant="tenant-b", status="queued")[0]
    assert operator.post(f"/v1/runs/{queued}/cancel").json()["status"] == "cancelled"
    seeded.runs = [(*r[:4], "cancelled") if r[0] == queued else r for r in seeded.runs]
    # ... but it starts nothing: conversations and turns need a tenant's key.
    for path, body in (
        ("/v1/conversations", {}),
        (f"/v1/conversations/{conversation}/messages", {"message": "hi"}),
    ):
        refused = operator.post(path, json=body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "forbidden"


def test_the_openapi_document_describes_the_lists(seeded_server: tuple[LiveServer, Seeded]) -> None:
    server, _ = seeded_server
    doc = server.client(None).get("/v1/openapi.json").json()
    runs = doc["paths"]["/v1/runs"]["get"]
    assert {p["name"] for p in runs["parameters"]} == {
        "status",
        "agent",
        "conversation",
        "since",
        "before",
        "limit",
    }
    assert runs["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunList"
    }
    assert "RunListItem" in doc["components"]["schemas"]
    assert doc["paths"]["/v1/breakers"]["get"]["responses"]["200"]
    assert doc["paths"]["/v1/whoami"]["get"]["responses"]["200"]


def test_a_live_run_is_listed_while_it_runs(store_url: str) -> None:
    """Runs made by the engine (not the seed) are listed with what the console shows."""
    server = start_server(store_url, [Agent("chat", model=ScriptedModel([say("<b>hello</b>")]))])
    try:
        a = server.client(KEY_A)
        conversation = a.post("/v1/conversations").json()["id"]
        run = a.post(
            f"/v1/conversations/{conversation}/messages",
            json={"message": "say <i>hi</i>", "stream": False},
        ).json()
        listed = a.get("/v1/runs", params={"conversation": conversation}).json()["runs"]
        assert [r["id"] for r in listed] == [run["id"]]
        assert listed[0]["message"] == "say <i>hi</i>" and listed[0]["tenant"] == "tenant-a"
        assert listed[0]["agent"] == "chat"
        for _ in range(500):
            done = a.get(f"/v1/runs/{run['id']}").json()
            if done["status"] == "succeeded":
                break
            time.sleep(0.02)
        assert done["answer"] == "<b>hello</b>" and done["message"] == "say <i>hi</i>"
        assert a.get("/v1/runs", params={"status": "succeeded"}).json()["runs"][0] == {
            **done,
            "tenant": "tenant-a",
        }
    finally:
        server.stop()


def test_orchestrion_without_agents_serves_the_lists(store_url: str) -> None:
    """The local console's app: no agents, an operator key only."""
    server = start_app(
        store_url, lambda orx: create_app(orx, keys={}, operator_keys=[OPERATOR_KEY]), []
    )
    try:
        operator = server.client(OPERATOR_KEY)
        assert operator.get("/v1/runs").json() == {"runs": [], "next": None}
        assert operator.get("/v1/whoami").json()["agents"] == []
        assert server.client(KEY_A).get("/v1/runs").status_code == 401
    finally:
        server.stop()


def test_create_app_needs_a_key_of_some_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one API key"):
        create_app(Orchestrion(f"sqlite:///{tmp_path / 'x.db'}"), keys={})
