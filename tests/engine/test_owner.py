"""Owner liveness across pid namespaces: a process in another container on the same machine
(host networking: same hostname, same boot id) is never declared dead from this one's
/proc, where its pid number means another process or nothing at all."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from orchestrion.engine.owner import owner_is_gone, process_identity


def _no_such_pid() -> int:
    pid = 4_000_000  # above any default pid_max
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_the_identity_names_the_pid_namespace() -> None:
    host, pid, _ = process_identity().rsplit("/", 2)
    namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    assert host.endswith(f":pidns{namespace[5:-1]}")
    assert int(pid) == os.getpid()


def test_an_owner_in_another_pid_namespace_is_never_gone_from_here() -> None:
    host, _, started = process_identity().rsplit("/", 2)
    elsewhere = host.rsplit(":pidns", 1)[0] + ":pidns4026500000"
    assert not owner_is_gone(f"{elsewhere}/{_no_such_pid()}/{started}")  # no such pid here
    assert not owner_is_gone(f"{elsewhere}/1/999")  # pid 1 here is another process
    # The same pid missing in our own namespace is proof.
    assert owner_is_gone(f"{host}/{_no_such_pid()}/{started}")


def test_an_owner_stored_by_an_older_version_is_not_provably_gone() -> None:
    # "hostname:boot-id/pid/start": no namespace, so its pid may be another container's.
    host, _, started = process_identity().rsplit("/", 2)
    old_host = host.rsplit(":pidns", 1)[0]
    assert not owner_is_gone(f"{old_host}/{_no_such_pid()}/{started}")
    assert not owner_is_gone(f"{old_host}/1/1")


def test_a_live_process_in_a_real_sibling_pid_namespace_is_not_taken_for_dead() -> None:
    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "--pid", "--fork", "--mount-proc", "true"]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("creating a pid namespace needs unshare(1) and CAP_SYS_ADMIN")
    code = (
        "import sys\n"
        "from orchestrion.engine.owner import process_identity\n"
        "print(process_identity(), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        identity = child.stdout.readline().strip()
        host, pid, _ = identity.rsplit("/", 2)
        # Same machine, same boot; a small pid that, here, is some other process.
        machine = process_identity().rsplit("/", 2)[0].rsplit(":pidns", 1)[0]
        assert host.rsplit(":pidns", 1)[0] == machine
        assert int(pid) < 10
        assert not owner_is_gone(identity)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
        assert not owner_is_gone(identity)  # gone now, but not provably from here
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
