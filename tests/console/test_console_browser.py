"""The console in a real headless Chromium, served by the app over real uvicorn on
loopback, on both stores: find a demo run, read a tool call's arguments in its waterfall;
watch a live turn appear and finish through network failures; another tenant sees
nothing; model output and tool data are shown as text, never run as markup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from orchestrion import Agent, RetryPolicy, ScriptedModel, call, say, tool
from orchestrion.demo.support import DEFAULT_MESSAGE, support_agent
from orchestrion.errors import BadRequest, ProviderUnavailable, RateLimited
from orchestrion.models.messages import ModelRequest
from orchestrion.models.scripted import ScriptedReply, turn_position
from tests.console.conftest import Watched, screenshot
from tests.console.helpers import CuttingProxy, open_run_from_list, run_turn, sign_in
from tests.engine.test_resilience_e2e import FlakyModel
from tests.server.helpers import (
    GATE,
    GATE_STARTED,
    KEY_A,
    KEY_B,
    LiveServer,
    new_conversation,
    start_server,
)

LIVE_TEXT = "Thanks for waiting. " + " ".join(
    f"Word {n} of an answer that streams to the console while the run goes on." for n in range(8)
)
XSS_MESSAGE = '<script>alert("message")</script>Hello <b>there</b>'
XSS_ARGUMENT = "<img src=x onerror=\"alert('argument')\">"
XSS_ANSWER = '<script>alert("answer")</script><img src=x onerror="alert(\'img\')"> & <i>done</i>'


def live_agent() -> Agent:
    """Calls a tool that waits for the test (GATE), then streams LIVE_TEXT."""

    @tool(timeout=None, retry=None)
    async def gate() -> str:
        """Wait for the test."""
        GATE_STARTED.set()
        while not GATE.is_set():  # noqa: ASYNC110 (a threading.Event set by the test)
            await asyncio.sleep(0.01)
        return "opened"

    def script(request: ModelRequest) -> ScriptedReply:
        return call("gate") if turn_position(request) == 0 else say(LIVE_TEXT)

    return Agent("live", model=ScriptedModel(script, chunk_size=5, chunk_delay=0.01), tools=[gate])


def html_agent() -> Agent:
    """Markup and script everywhere: tool arguments, tool result, answer."""

    @tool
    def note(text: str) -> str:
        """Keep a note."""
        return f"<b>{text}</b><script>alert('result')</script>"

    def script(request: ModelRequest) -> ScriptedReply:
        return call("note", text=XSS_ARGUMENT) if turn_position(request) == 0 else say(XSS_ANSWER)

    return Agent("html", model=ScriptedModel(script), tools=[note])


def backend(store_url: str) -> str:
    return "postgres" if store_url.startswith("postgres") else "sqlite"


@pytest.fixture
def console(store_url: str) -> Iterator[LiveServer]:
    GATE.clear()
    GATE_STARTED.clear()
    server = start_server(
        store_url, [support_agent(), live_agent(), html_agent()], default_agent="support"
    )
    try:
        yield server
    finally:
        server.stop()


def test_find_a_demo_run_open_its_waterfall_and_read_a_tool_calls_arguments(
    console: LiveServer, watched: Watched, store_url: str
) -> None:
    page = watched.page
    a = console.client(KEY_A)
    runs = [run_turn(a, "support", DEFAULT_MESSAGE) for _ in range(3)]
    target = runs[1]
    sign_in(page, console.url, KEY_A)

    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(3)
    assert [r.get_attribute("data-run") for r in rows.all()] == [r["id"] for r in runs[::-1]]
    first = rows.first
    expect(first.locator('td[data-label="Status"]')).to_have_text("succeeded")
    expect(first.locator('td[data-label="Message"]')).to_have_text(DEFAULT_MESSAGE)
    screenshot(page, f"runs-list-{backend(store_url)}")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(first.locator('td[data-label="Status"]')).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, f"runs-list-phone-{backend(store_url)}")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Found by its id, the search goes to the run.
    page.get_by_label("Find a run or conversation by id").fill(target["id"])
    page.keyboard.press("Enter")
    page.locator(f'h1:has-text("{target["id"]}")').wait_for()
    expect(page.locator('[data-field="answer"]')).to_have_text(target["answer"])
    expect(page.locator('[data-field="message"]')).to_have_text(DEFAULT_MESSAGE)

    tools = page.locator(".wf-row.kind-tool")
    expect(tools).to_have_count(3)
    assert tools.locator(".wf-label").all_inner_texts() == [
        "execute_tool crm_lookup",
        "execute_tool book_appointment",
        "execute_tool send_email",
    ]
    tools.filter(has_text="crm_lookup").get_by_role("button").click()
    detail = page.locator("#span-detail")
    assert json.loads(detail.locator('[data-field="arguments"]').inner_text()) == {
        "customer_id": 42
    }
    assert json.loads(detail.locator('[data-field="result"]').inner_text())["name"] == (
        "Ada Lovelace"
    )
    expect(detail.locator('[data-field="idempotency_key"]')).to_have_text(f"{target['id']}:2")
    assert "span=" in page.url  # the chosen span is in the address: a link to share

    # The keyboard: Home, arrows and Enter choose a span.
    page.locator(".wf-button").nth(3).focus()
    page.keyboard.press("Home")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    chosen = page.locator(".wf-button").nth(2)
    expect(chosen).to_have_attribute("aria-pressed", "true")
    expect(detail.locator("h3")).to_have_text(chosen.locator(".wf-label").inner_text())
    page.keyboard.press("End")
    expect(page.locator(".wf-button").last).to_be_focused()
    expect(page.locator('.wf-button[tabindex="0"]')).to_have_count(1)  # one Tab stop
    tools.filter(has_text="send_email").get_by_role("button").click()
    screenshot(page, f"run-page-{backend(store_url)}")

    # A phone: the same page, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    detail.locator('[data-field="arguments"]').wait_for()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, f"run-page-phone-{backend(store_url)}")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Its conversation: the messages of the turn and its run, the current state.
    page.locator(".summary a").first.click()
    page.locator('h1:has-text("Conversation")').wait_for()
    expect(page.locator('[data-field="state"]')).to_have_text("AWAITING_INPUT")
    expect(page.locator(".messages > li")).to_have_count(7)
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    # Back (the browser's history) to the run.
    page.go_back()
    page.locator(f'h1:has-text("{target["id"]}")').wait_for()


def test_a_live_turn_appears_and_finishes_with_every_streamed_word(
    console: LiveServer, watched: Watched, store_url: str
) -> None:
    """Through a proxy that cuts every connection twice: while the run waits in a tool,
    and while its answer streams. The page reconnects with Last-Event-ID each time and
    shows every word exactly once."""
    page = watched.page
    port = int(console.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(("127.0.0.1", port))
    streams: list[Any] = []
    page.on("request", lambda r: streams.append(r) if r.url.endswith("/events") else None)
    try:
        sign_in(page, proxy.url, KEY_A)
        expect(page.locator(".list-status")).to_have_text("No runs yet.")
        a = console.client(KEY_A)
        conversation = new_conversation(a, "live")
        run = a.post(
            f"/v1/conversations/{conversation}/messages",
            json={"message": "Please check my booking", "stream": False},
        ).json()
        # The new run appears in the list by itself (live updates), and opens.
        open_run_from_list(page, run["id"])
        assert GATE_STARTED.wait(60)
        page.locator(".wf-row.kind-tool.open").wait_for()  # the tool call, still running
        heading = page.locator("h1")
        expect(heading).to_have_attribute("data-status", "running")
        live = page.locator(".live-state")
        expect(live).to_have_attribute("data-state", "live")
        screenshot(page, f"run-live-{backend(store_url)}")

        with page.expect_request(lambda r: r.url.endswith("/events")):
            assert proxy.cut() >= 1  # the network fails while the run waits
        expect(live).to_have_attribute("data-state", "live")
        GATE.set()
        page.locator('[data-field="answer-live"], h1[data-status="succeeded"]').first.wait_for()
        proxy.cut()  # and again, most likely while the answer streams
        expect(heading).to_have_attribute("data-status", "succeeded", timeout=60_000)
        expect(page.locator('[data-field="answer"]')).to_have_text(LIVE_TEXT)
        assert page.locator('[data-field="streamed"]').text_content() == LIVE_TEXT
        expect(page.locator(".wf-row.open")).to_have_count(0)
        expect(page.locator(".wf-row.kind-model")).to_have_count(2)
    finally:
        proxy.close()
    # Each reconnection resumed after the last event seen, with the key in a header only.
    headers = [r.all_headers() for r in streams]
    assert headers[0]["last-event-id"] == "0"
    assert any(int(h["last-event-id"]) > 0 for h in headers[1:]), headers
    assert all(h["authorization"] == f"Bearer {KEY_A}" for h in headers)
    assert all(KEY_A not in r.url for r in streams)


def test_another_tenants_key_sees_none_of_it(
    console: LiveServer, watched: Watched, store_url: str
) -> None:
    page = watched.page
    a, b = console.client(KEY_A), console.client(KEY_B)
    theirs = run_turn(a, "support", DEFAULT_MESSAGE)
    mine = run_turn(b, "html", "mine")
    sign_in(page, console.url, KEY_B)
    expect(page.locator("#scope")).to_have_text("Tenant: tenant-b")
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-run") == mine["id"]
    for secret in (theirs["id"], theirs["conversation_id"], theirs["answer"]):
        assert secret not in page.content()

    # Their ids, searched for or opened directly, are unknown.
    search = page.get_by_label("Find a run or conversation by id")
    for their_id in (theirs["id"], theirs["conversation_id"]):
        search.fill(their_id)
        page.keyboard.press("Enter")
        expect(page.locator(".find-result")).to_have_text(
            f"No run or conversation has the id “{their_id}”."
        )
    for path, what in (
        (f"runs/{theirs['id']}", "No such run"),
        (f"conversations/{theirs['conversation_id']}", "No such conversation"),
    ):
        page.goto(f"{console.url}/ui/{path}")
        expect(page.locator("h1")).to_have_text(what)
        assert theirs["answer"] not in page.content()
    page.goto(f"{console.url}/ui/?conversation={theirs['conversation_id']}")
    expect(page.locator(".list-status")).to_have_text("No runs match these filters.")
    page.goto(f"{console.url}/ui/breakers")  # the fleet's breakers: every key sees them
    expect(page.locator("table.breakers tbody tr").first).to_be_visible()


def test_markup_in_answers_arguments_results_and_messages_is_shown_as_text(
    tmp_path: Path, watched: Watched
) -> None:
    page = watched.page
    server = start_server(tmp_path / "store.db", [html_agent()])
    try:
        run = run_turn(server.client(KEY_A), "html", XSS_MESSAGE)
        assert run["answer"] == XSS_ANSWER
        sign_in(page, server.url, KEY_A)
        row = page.locator(f'tr[data-run="{run["id"]}"]')
        expect(row.locator('td[data-label="Message"]')).to_have_text(XSS_MESSAGE)
        expect(row.locator('td[data-label="Answer or error"]')).to_have_text(XSS_ANSWER)

        open_run_from_list(page, run["id"])
        expect(page.locator('[data-field="answer"]')).to_have_text(XSS_ANSWER)
        expect(page.locator('[data-field="message"]')).to_have_text(XSS_MESSAGE)
        page.locator(".wf-row.kind-tool").get_by_role("button").click()
        detail = page.locator("#span-detail")
        assert json.loads(detail.locator('[data-field="arguments"]').inner_text()) == {
            "text": XSS_ARGUMENT
        }
        expect(detail.locator('[data-field="result"]')).to_contain_text(
            "<script>alert('result')</script>"
        )
        page.locator(".wf-row.kind-model").last.get_by_role("button").click()
        expect(detail.locator('[data-field="response_text"]')).to_have_text(XSS_ANSWER)

        page.locator(".summary a").first.click()
        page.locator('h1:has-text("Conversation")').wait_for()
        texts = page.locator(".messages .text").all_inner_texts()
        assert XSS_MESSAGE in texts and XSS_ANSWER in texts
        assert any("<script>alert('result')</script>" in t for t in texts)
        calls = [json.loads(t) for t in page.locator(".tool-call pre").all_inner_texts()]
        assert calls == [{"text": XSS_ARGUMENT}]
        # Nothing became an element: no image, no script but the console's own.
        assert page.evaluate("document.querySelectorAll('img, b, i').length") == 0
        assert page.evaluate("[...document.scripts].map(s => s.src)") == [
            f"{server.url}/ui/assets/js/main.js"
        ]
    finally:
        server.stop()
    # (The `watched` fixture then checks that no dialog opened and no script error occurred.)


def test_retries_their_waits_and_a_failed_run(tmp_path: Path, watched: Watched) -> None:
    """A model call retried twice (a 429 with Retry-After, a 529): the waits are bars of
    their own; a run that failed is found with the status filter and shows its error."""
    fast = RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=0.1, jitter=False)
    flaky = FlakyModel(
        [
            RateLimited("slow down", status_code=429, retry_after=0.05),
            ProviderUnavailable("overloaded", status_code=529),
        ],
        ScriptedModel([say("finally")]),
    )
    broken = FlakyModel(
        [BadRequest("messages.0: invalid role", status_code=400)], ScriptedModel([say("no")])
    )
    agents = [Agent("flaky", model=flaky, retry=fast), Agent("broken", model=broken, retry=fast)]
    server = start_server(tmp_path / "store.db", agents, default_agent="flaky")
    page = watched.page
    try:
        a = server.client(KEY_A)
        retried = run_turn(a, "flaky", "hello")
        failed = run_turn(a, "broken", "hello")
        assert retried["status"] == "succeeded" and failed["status"] == "failed"
        sign_in(page, server.url, KEY_A)
        expect(page.locator("table.runs tbody tr")).to_have_count(2)
        page.get_by_label("Status").select_option("failed")
        expect(page.locator("table.runs tbody tr")).to_have_count(1)
        assert "status=failed" in page.url
        row = page.locator(f'tr[data-run="{failed["id"]}"]')
        expect(row.locator('td[data-label="Answer or error"]')).to_contain_text("BadRequest")
        open_run_from_list(page, failed["id"])
        expect(page.locator('[data-field="error"]')).to_contain_text("BadRequest")

        page.goto(f"{server.url}/ui/runs/{retried['id']}")
        waits = page.locator(".wf-row.kind-retry").filter(has_text="retry wait")
        expect(waits).to_have_count(2)
        for wait in waits.all():  # a wait lasts: a bar, not a point
            assert "point" not in (wait.get_attribute("class") or "")
        expect(waits.first.locator(".wf-time")).to_have_text("50.0 ms")  # Retry-After 0.05
        waits.first.get_by_role("button").click()
        expect(page.locator('#span-detail [data-field="reason"]')).to_have_text("retry_after")
        screenshot(page, "run-page-retries")
    finally:
        server.stop()
