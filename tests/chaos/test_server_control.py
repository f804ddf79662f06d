"""The chaos server's control surface (log, reset, plan) and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from orchestrion.chaos.cli import chaos
from orchestrion.chaos.plan import FAULTS, PRESETS
from orchestrion.chaos.testing import chaos_log, reset_chaos, running_chaos_server, set_chaos_plan

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def post(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=BODY, headers=headers, timeout=10)


def test_log_records_each_injection_and_reset_clears_it() -> None:
    plan = {"faults": [{"fault": "rate_limit", "every": 2, "retry_after": 3}]}
    with running_chaos_server(plan) as url:
        statuses = [post(url).status_code for _ in range(4)]
        assert statuses == [200, 429, 200, 429]
        log = chaos_log(url)
        assert log["calls"] == 4
        assert log["counts"] == {"none": 2, "rate_limit": 2}
        assert [e["fault"] for e in log["entries"]] == [None, "rate_limit", None, "rate_limit"]
        assert [e["status"] for e in log["entries"]] == statuses
        assert log["entries"][1]["detail"]["retry_after"] == 3
        assert [e["call"] for e in chaos_log(url, fault="rate_limit")["entries"]] == [2, 4]
        reset_chaos(url)
        assert chaos_log(url) == {"calls": 0, "counts": {}, "entries": []}
        # the counter restarted: call 1 again is clean, call 2 again is a 429
        assert [post(url).status_code for _ in range(2)] == [200, 429]


def test_header_overrides_the_plan_and_bad_headers_are_400() -> None:
    with running_chaos_server({"faults": [{"fault": "server_error"}]}) as url:
        assert post(url).status_code == 500
        assert post(url, {"x-chaos-fault": "none"}).status_code == 200
        assert post(url, {"x-chaos-fault": "unavailable"}).status_code == 503
        bad = post(url, {"x-chaos-fault": "meteor"})
        assert bad.status_code == 400 and bad.json()["error"]["message"] == (
            "bad x-chaos-fault header: fault: unknown fault 'meteor' "
            "(`orchestrion chaos faults` lists them)"
        )
        log = chaos_log(url)
        assert [e["source"] for e in log["entries"]] == ["plan", "header", "header"]
        assert log["calls"] == 3  # the refused request is not a call


def test_plan_can_be_replaced_at_runtime() -> None:
    with running_chaos_server() as url:
        assert post(url).status_code == 200
        set_chaos_plan(url, {"faults": [{"fault": "overloaded"}]})
        assert chaos_log(url)["calls"] == 0
        assert post(url).status_code == 529
        assert httpx.get(f"{url}/chaos/plan").json()["faults"][0]["fault"] == "overloaded"
        refused = httpx.put(f"{url}/chaos/plan", content=b'{"faults": [{"fault": "nope"}]}')
        assert refused.status_code == 400
        assert refused.json() == {
            "error": "invalid plan: faults[0].fault: unknown fault 'nope' "
            "(`orchestrion chaos faults` lists them)"
        }
        broken = httpx.put(f"{url}/chaos/plan", content=b'{"faults": [')
        assert broken.status_code == 400
        message = broken.json()["error"]
        assert message.startswith("invalid plan: ") and "\n" not in message
        assert "errors.pydantic.dev" not in message


def test_same_seed_same_faults_over_http() -> None:
    plan = {"seed": 11, "faults": [{"fault": "unavailable", "probability": 0.5}]}
    runs = []
    for _ in range(2):
        with running_chaos_server(plan) as url:
            runs.append([post(url).status_code for _ in range(16)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


def test_invalid_bodies_get_provider_shaped_400s() -> None:
    with running_chaos_server() as url:
        r = httpx.post(f"{url}/v1/chat/completions", content=b"not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = httpx.post(f"{url}/v1/messages", json={"model": "m", "messages": []})
        assert r.status_code == 400 and r.json()["type"] == "error"
        assert chaos_log(url)["calls"] == 0  # refused requests are not model calls
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "chaos"
        assert httpx.get(f"{url}/health").json()["ok"] is True


def test_cli_help_and_listings() -> None:
    runner = CliRunner()
    result = runner.invoke(chaos, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output
    result = runner.invoke(chaos, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--plan", "--preset", "--seed", "--script"):
        assert option in result.output
    result = runner.invoke(chaos, ["presets"])
    assert all(name in result.output for name in PRESETS)
    result = runner.invoke(chaos, ["faults"])
    assert all(kind in result.output for kind in FAULTS)


def test_cli_refuses_plan_and_preset_together(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    result = CliRunner().invoke(chaos, ["serve", "--plan", str(plan), "--preset", "flaky"])
    assert result.exit_code == 2 and "not both" in result.output
    plan.write_text(json.dumps({"faults": [{"fault": "nope"}]}))
    result = CliRunner().invoke(chaos, ["serve", "--plan", str(plan)])
    assert result.exit_code == 2


def test_cli_serve_runs_a_real_server() -> None:
    code = "from orchestrion.chaos.cli import chaos; chaos()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", "0", "--preset", "rate-limited"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("chaos server listening on http://127.0.0.1:")
        url = first.split()[4]
        # rate-limited: every 2nd call is a 429
        assert [post(url).status_code for _ in range(2)] == [200, 429]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/chat/completions"])
def test_openai_path_works_with_and_without_v1(path: str) -> None:
    with running_chaos_server() as url:
        r = httpx.post(f"{url}{path}", json=BODY)
        assert r.json()["choices"][0]["message"]["role"] == "assistant"
