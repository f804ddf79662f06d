"""`orchestrion console` as a real process, on both stores: it prints a URL that opens the
console on a local store without asking for a key, reads every tenant, refuses other
hosts and writes; it never creates a store and fails in one line."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from orchestrion.demo.support import DEFAULT_MESSAGE
from tests.cli.helpers import ORCHESTRION, assert_clean_error, cli, env, run_id_from_demo
from tests.console.conftest import Watched


class Console:
    def __init__(self, store: str, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(ORCHESTRION), "--store", store, "console", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()  # printed once it listens
        assert self.url, self.proc.communicate(timeout=30)
        self.origin, _, fragment = self.url.partition("/ui/#")
        self.key = fragment.removeprefix("key=")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


@pytest.fixture
def console(store_url: str, tmp_path: Path) -> Iterator[tuple[Console, str]]:
    demo = cli("demo", "--no-trace", store=store_url, cwd=tmp_path)
    run_id = run_id_from_demo(demo.stdout)
    console = Console(store_url, tmp_path)
    try:
        yield console, run_id
    finally:
        code, err = console.stop()
        assert code == 0 and "Traceback" not in err, err


def test_the_printed_url_opens_the_local_store_in_a_browser(
    console: tuple[Console, str], watched: Watched
) -> None:
    server, run_id = console
    assert server.url.startswith("http://127.0.0.1:") and server.key.startswith("orx_")
    page = watched.page
    page.goto(server.url)
    expect(page.locator("#scope")).to_have_text("Every tenant (local console)")
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row.locator('td[data-label="Tenant"]')).to_have_text("default")
    expect(row.locator('td[data-label="Message"]')).to_have_text(DEFAULT_MESSAGE)
    assert "key=" not in page.url  # taken from the address bar into the tab's session
    row.locator("a[data-run-link]").click()
    page.locator(".wf-row.kind-tool").filter(has_text="book_appointment").get_by_role(
        "button"
    ).click()
    arguments = page.locator('#span-detail [data-field="arguments"]').inner_text()
    assert json.loads(arguments) == {"customer_id": 42, "slot": "Friday 10:00"}
    page.reload()  # the key stays for the tab's session
    page.locator(f'h1:has-text("{run_id}")').wait_for()
    page.get_by_role("button", name="Forget key").click()
    expect(page.get_by_label("API key")).to_be_visible()


def test_it_needs_its_key_refuses_other_hosts_and_starts_nothing(
    console: tuple[Console, str],
) -> None:
    server, run_id = console
    with httpx.Client(base_url=server.origin, timeout=30) as client:
        assert client.get("/v1/runs").status_code == 401
        assert client.get("/ui/").status_code == 200  # the page itself holds no data
        auth = {"Authorization": f"Bearer {server.key}"}
        runs = client.get("/v1/runs", headers=auth).json()["runs"]
        assert [r["id"] for r in runs] == [run_id]
        # A page of another site, reaching 127.0.0.1 through a name it controls.
        foreign = client.get("/v1/runs", headers={**auth, "Host": "evil.example"})
        assert foreign.status_code == 400
        refused = client.post("/v1/conversations", headers=auth, json={})
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"


def test_a_missing_store_is_not_created_and_a_busy_port_is_named(
    tmp_path: Path, store_url: str
) -> None:
    missing = tmp_path / "missing.db"
    proc = cli("console", "--port", "0", store=missing, cwd=tmp_path, check=False)
    assert_clean_error(proc, "missing.db", code=1)
    assert not missing.exists() and list(tmp_path.iterdir()) == []

    cli("demo", "--no-trace", store=store_url, cwd=tmp_path)
    first = Console(store_url, tmp_path)
    try:
        port = first.origin.rsplit(":", 1)[1]
        busy = cli("console", "--port", port, store=store_url, cwd=tmp_path, check=False)
        last = assert_clean_error(busy, code=1)
        assert last == (
            f"Error: cannot listen on 127.0.0.1:{port}: the port is in use "
            "(choose another with --port)"
        )
        assert busy.stdout == ""  # no URL was printed
    finally:
        assert first.stop()[0] == 0
