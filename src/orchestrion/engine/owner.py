"""Who owns a run, and whether that owner is provably gone.

An owner is "host/pid/start-time". On the same host, a worker need not wait for a dead
owner's lease to expire: if the pid is gone, is a zombie, or now belongs to a process
that started at another time (pid reuse), the owner is gone for certain. On another host
nothing is provable, and the lease's expiry decides.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


@functools.cache
def _host() -> str:
    boot = ""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        pass
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


def _start_time(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc, or None if no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ("?", "?")
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def process_identity(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    info = _start_time(pid)
    started = info[1] if info else "0"
    return f"{_host()}/{pid}/{started}"


def owner_is_gone(owner: str | None) -> bool:
    """True only when the owner is certainly dead (same host, process gone or reused)."""
    if not owner:
        return True
    try:
        host, pid_text, started = owner.rsplit("/", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != _host():
        return False
    if not Path("/proc").is_dir():  # not Linux: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    info = _start_time(pid)
    if info is None:
        return True
    state, now_started = info
    return state in ("Z", "X") or (started != "0" and now_started not in ("?", started))


def owner_host(owner: str) -> str:
    """The host part of an owner identity (what `owner_is_gone` can judge from here)."""
    return owner.rsplit("/", 2)[0]
