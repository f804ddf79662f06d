"""The console's files as the server hands them out: one page for every /ui path, the
assets with their types and ETags, a content security policy that forbids inline
script, and a module graph whose every import ships with the package."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrion import Agent, ScriptedModel, say
from orchestrion.server import create_app
from orchestrion.server.console import ASSETS, load_assets
from tests.server.helpers import KEYS, LiveServer, start_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = tmp_path_factory.mktemp("ui") / "store.db"
    agent = Agent("chat", model=ScriptedModel([say("hi")]))
    live = start_app(store, lambda orx: create_app(orx, keys=KEYS), [agent])
    try:
        yield live
    finally:
        live.stop()


@pytest.mark.parametrize("path", ["/ui", "/ui/", "/ui/runs/run_123", "/ui/breakers", "/ui/x/y"])
def test_every_console_path_is_the_page(server: LiveServer, path: str) -> None:
    response = server.client(None).get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<base href="/ui/">' in response.text
    assert '<script type="module" src="assets/js/main.js"></script>' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_assets_have_their_types_and_etags(server: LiveServer) -> None:
    client = server.client(None)
    script = client.get("/ui/assets/js/main.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.text == (ASSETS / "js" / "main.js").read_text()
    again = client.get("/ui/assets/js/main.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    style = client.get("/ui/assets/console.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert client.head("/ui/assets/console.css").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/ui/assets/nope.js", "/ui/assets/%2e%2e/cli.py", "/ui/assets/"],
)
def test_nothing_else_is_served_from_the_package(server: LiveServer, path: str) -> None:
    response = server.client(None).get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_the_console_is_off_when_asked(tmp_path: Path) -> None:
    live = start_app(tmp_path / "s.db", lambda orx: create_app(orx, keys=KEYS, console=False), [])
    try:
        assert live.client(None).get("/ui/").status_code == 404
    finally:
        live.stop()


def test_every_module_the_pages_import_ships_with_the_package() -> None:
    assets = load_assets()
    scripts = [name for name in assets if name.endswith(".js")]
    assert "js/main.js" in scripts
    seen: set[str] = set()
    todo = ["js/main.js"]
    while todo:
        name = todo.pop()
        seen.add(name)
        text = assets[name].body.decode()
        for target in re.findall(
            r'^import [^;]*?from "(\.[^"]+)";', text, re.MULTILINE | re.DOTALL
        ):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            assert resolved in assets, f"{name} imports {target}, which is not shipped"
            if resolved not in seen:
                todo.append(resolved)
    assert seen == set(scripts), f"shipped but never loaded: {set(scripts) - seen}"


def test_no_page_builds_markup_from_strings() -> None:
    """Data enters the document as text only (the XSS tests show it; this keeps it so)."""
    for name, asset in load_assets().items():
        if name.endswith(".js"):
            text = asset.body.decode()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
                assert sink not in text, f"{name} uses {sink}"
