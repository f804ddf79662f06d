"""`orchestrion serve` as a real process: a busy port or a bad store fails in one line
before any banner; with --app only the app's agents are served unless --demo; the
no-keys error suggests keys that would be accepted."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrion.server.auth import parse_keys
from tests.cli.helpers import ORCHESTRION, assert_clean_error, cli, env
from tests.server.test_serve_cli import stop, up

KEY = "a-key-for-the-serve-tests-0123"
GREETER = """\
from orchestrion import Agent, ScriptedModel, say

greeter = Agent("greeter", model=ScriptedModel([say("Hello from the app.")]))
"""


def _keys_env() -> dict[str, str]:
    return env(ORCHESTRION_API_KEYS=f"{KEY}=acme")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_busy_port_fails_before_the_banner(store: str, tmp_path: Path, busy_port: int) -> None:
    proc = cli(
        "serve", "--port", str(busy_port), "--insecure-dev-key", store=store, cwd=tmp_path,
        check=False,
    )  # fmt: skip
    line = assert_clean_error(proc, code=1)
    assert line == f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is in use " + (
        "(choose another with --port)"
    )
    assert proc.stderr.strip() == line  # no banner, no development key
    assert proc.stdout == ""


def test_a_bad_store_fails_before_the_banner(tmp_path: Path) -> None:
    proc = cli("serve", "--port", "0", store="sqlite:x.db", cwd=tmp_path, environ=_keys_env(),
               check=False)  # fmt: skip
    line = assert_clean_error(proc, "sqlite:///x.db", code=1)
    assert proc.stderr.strip() == line
    assert list(tmp_path.iterdir()) == []


def test_no_keys_suggests_a_key_that_is_accepted(tmp_path: Path) -> None:
    proc = cli("serve", "--port", "0", cwd=tmp_path, check=False)
    line = assert_clean_error(proc, "no API keys", "at least 16 characters", code=1)
    command = re.search(r"`(python3 -c .+?)`", line)
    assert command, line
    made = subprocess.run(shlex.split(command.group(1)), capture_output=True, text=True)
    key = made.stdout.strip()
    assert parse_keys(f"{key}=acme") == {key: "acme"}
    short = cli("serve", environ=env(ORCHESTRION_API_KEYS="key1=tenantA"), check=False)
    assert_clean_error(short, "entry 1", "at least 16 characters", "secrets.token_urlsafe")


def _serve(store: str, cwd: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(ORCHESTRION), "--store", store, "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=_keys_env(),
    )
    url = f"http://127.0.0.1:{port}"
    up(proc, url)
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> str:
    return stop(proc)[1]


@pytest.mark.parametrize("demo", [False, True])
def test_the_demo_agent_is_served_with_app_only_on_request(
    store: str, tmp_path: Path, demo: bool
) -> None:
    (tmp_path / "myapp.py").write_text(GREETER)
    proc, url = _serve(store, tmp_path, "--app", "./myapp.py:greeter", *(["--demo"] * demo))
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            default = client.post("/v1/conversations")
            assert default.status_code == 201 and default.json()["agent"] == "greeter"
            support = client.post("/v1/conversations", json={"agent": "support"})
            assert support.status_code == (201 if demo else 422), support.text
    finally:
        err = _stop(proc)
    expected = "agents: greeter, support)" if demo else "agents: greeter)"
    assert expected in err
    assert "Traceback" not in err


def test_without_app_the_demo_agent_is_served(store: str, tmp_path: Path) -> None:
    proc, url = _serve(store, tmp_path)
    try:
        answer = httpx.post(
            f"{url}/v1/conversations", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )
        assert answer.status_code == 201 and answer.json()["agent"] == "support"
    finally:
        err = _stop(proc)
    assert "agents: support)" in err
