"""PostgreSQL connection failures against the real server on this machine: each names its
cause (no such database, no such role, nothing listening) with advice that fits it, on
one line, from the real `orchestrion` executable."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cli.helpers import assert_clean_error, cli
from tests.store.pg import DSN, require_postgres


def _with(netloc: str | None = None, path: str | None = None) -> str:
    parts = urlsplit(DSN)
    return urlunsplit(
        (parts.scheme, netloc or parts.netloc, path or parts.path, "schema=cli_errors", "")
    )


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture(autouse=True)
def _server() -> None:
    require_postgres()


def test_a_database_that_does_not_exist() -> None:
    url = _with(path="/no_such_db_orx")
    line = assert_clean_error(cli("runs", store=url, check=False), code=1)
    host = urlsplit(DSN).hostname
    assert line.startswith(f"Error: PostgreSQL at {host}:")
    assert "has no database 'no_such_db_orx'" in line
    assert "createdb no_such_db_orx" in line
    assert "role" not in line and "listening" not in line


def test_a_role_that_does_not_exist() -> None:
    parts = urlsplit(DSN)
    netloc = f"no_such_role_orx@{parts.hostname}:{parts.port or 5432}"
    line = assert_clean_error(cli("runs", store=_with(netloc=netloc), check=False), code=1)
    assert "has no role 'no_such_role_orx'" in line
    assert "CREATE ROLE no_such_role_orx LOGIN" in line
    assert "no database" not in line


def test_nothing_listening_on_the_port() -> None:
    port = _unused_port()
    netloc = f"{urlsplit(DSN).username}@127.0.0.1:{port}"
    for command in (("runs",), ("worker", "--drain"), ("demo", "--no-trace")):
        proc = cli(*command, store=_with(netloc=netloc), check=False)
        line = assert_clean_error(proc, code=1)
        assert line.startswith(f"Error: nothing is listening for PostgreSQL at 127.0.0.1:{port}")
        assert "start the server" in line and "if the host or port is wrong" in line


def test_an_unknown_host() -> None:
    netloc = f"{urlsplit(DSN).username}@no-such-host.invalid:5432"
    line = assert_clean_error(cli("runs", store=_with(netloc=netloc), check=False), code=1)
    assert "cannot find the PostgreSQL host of no-such-host.invalid:5432" in line
