"""`orchestrion serve` as a real process: keys from the environment or a file (never
printed), a refusal without keys, the dev key, a demo turn streamed, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.server.helpers import SSEReader, text_of, wait_for

CLI = str(Path(sys.executable).parent / "orchestrion")
ENV_KEY = "env-key-for-tenant-one-000000"
FILE_KEY = "file-key-for-tenant-two-11111"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    tmp_path: Path, *args: str, env_keys: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRION_API_KEYS"}
    if env_keys is not None:
        env["ORCHESTRION_API_KEYS"] = env_keys
    proc = subprocess.Popen(
        [CLI, "--store", f"sqlite:///{tmp_path / 's.db'}", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return proc, f"http://127.0.0.1:{port}"


def up(proc: subprocess.Popen[str], url: str) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, proc.communicate()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, what="the server answers /health", pause=0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out + err


def test_serve_streams_a_demo_turn_with_keys_from_env_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\n\n{FILE_KEY}=tenant-two\n")
    proc, url = serve(tmp_path, "--keys-file", str(keys_file), env_keys=f"{ENV_KEY}=tenant-one")
    try:
        up(proc, url)
        one = {"Authorization": f"Bearer {ENV_KEY}"}
        two = {"Authorization": f"Bearer {FILE_KEY}"}
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/ready").json() == {"status": "ready"}
            conversation = client.post("/v1/conversations", headers=one).json()
            assert conversation["agent"] == "support"
            message = "Hi, I'm customer 42. Please move my appointment to Friday 10:00."
            with client.stream(
                "POST",
                f"/v1/conversations/{conversation['id']}/messages",
                json={"message": message},
                headers=one,
            ) as response:
                events = list(SSEReader(response))
            assert events[-1].data["attributes"]["run.status"] == "succeeded"
            assert "Friday 10:00" in text_of(events)
            run_id = events[0].data["run_id"]
            assert client.get(f"/v1/runs/{run_id}", headers=one).status_code == 200
            assert client.get(f"/v1/runs/{run_id}", headers=two).status_code == 404
            assert client.post("/v1/conversations", headers=two).status_code == 201
            bad = {"Authorization": "Bearer nope-nope-nope-nope"}
            assert client.get(f"/v1/runs/{run_id}", headers=bad).status_code == 401
    finally:
        code, output = stop(proc)
    # A graceful shutdown (uvicorn then re-raises SIGTERM, so the status may say so).
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "serving on" in output
    assert ENV_KEY not in output and FILE_KEY not in output  # keys are never logged


def test_serve_refuses_to_start_without_keys(tmp_path: Path) -> None:
    proc, _ = serve(tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "no API keys" in err and "ORCHESTRION_API_KEYS" in err and "--keys-file" in err


def test_serve_rejects_a_malformed_key_without_echoing_it(tmp_path: Path) -> None:
    proc, _ = serve(tmp_path, env_keys="short=tenant,secret-but-no-tenant-000000")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "at least 16 characters" in err
    assert "short" not in err
    assert "secret-but-no-tenant" not in err


def test_insecure_dev_key_prints_a_working_key(tmp_path: Path) -> None:
    proc, url = serve(tmp_path, "--insecure-dev-key")
    try:
        up(proc, url)
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]  # printed before serving starts
        (line,) = [x for x in lines if "insecure development key" in x]
        key = line.rsplit(" ", 1)[-1].strip()
        r = httpx.post(f"{url}/v1/conversations", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201
        r = httpx.post(f"{url}/v1/conversations", headers={"Authorization": "Bearer x" * 3})
        assert r.status_code == 401
    finally:
        code, _ = stop(proc)
    assert code in (0, -signal.SIGTERM)
