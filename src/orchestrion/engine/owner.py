"""Who owns a run, and whether that owner is provably gone.

An owner is "HOST/pid/start-time", HOST being "hostname:boot-id:pidnsNNN": the machine's
name, the kernel's boot id, and the inode of the process's pid namespace
(/proc/self/ns/pid). Two processes with the same HOST see the same process table, so a
worker need not wait for a dead owner's lease to expire: if the pid is gone, is a zombie,
or now belongs to a process that started at another time (pid reuse), the owner is gone
for certain. Anything else proves nothing and the lease's expiry decides: another
machine; a container with host networking (same hostname and boot id, its own pid
namespace: the same pid number there is another process); an owner written by an older
version (no namespace in HOST); or a process that cannot read its own namespace.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path

_PID_NAMESPACE = re.compile(r"pid:\[(\d+)\]")


@functools.cache
def _pid_namespace() -> str | None:
    """The inode of this process's pid namespace, or None when /proc does not say."""
    try:
        match = _PID_NAMESPACE.fullmatch(os.readlink("/proc/self/ns/pid"))
    except OSError:
        return None
    return match.group(1) if match else None


@functools.cache
def _host() -> str:
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
    except OSError:
        pass
    namespace = _pid_namespace()
    if namespace is not None:
        parts.append(f"pidns{namespace}")
    return ":".join(parts)


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
    """The owner identity of process `pid` (default: this one), seen from this process."""
    pid = os.getpid() if pid is None else pid
    info = _start_time(pid)
    started = info[1] if info else "0"
    return f"{_host()}/{pid}/{started}"


def owner_is_gone(owner: str | None) -> bool:
    """True only when the owner is certainly dead (same host and pid namespace, process
    gone or its pid reused); False whenever that cannot be proven from here."""
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
    if _pid_namespace() is None:
        return False  # our own namespace is unknown: /proc may not be the owner's
    info = _start_time(pid)
    if info is None:
        return True
    state, now_started = info
    return state in ("Z", "X") or (started != "0" and now_started not in ("?", started))


def owner_host(owner: str) -> str:
    """The host part of an owner identity (what `owner_is_gone` can judge from here)."""
    return owner.rsplit("/", 2)[0]
