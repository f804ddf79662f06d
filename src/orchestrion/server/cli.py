"""`orchestrion serve`: the HTTP API on uvicorn."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from typing import Any

import click

from orchestrion.server.auth import (
    KEY_HINT,
    KEYS_ENV,
    KeyConfigError,
    generate_key,
    parse_keys,
    read_keys_file,
)


def load_keys(keys_file: str | None, insecure_dev_key: bool) -> dict[str, str]:
    """Keys from $ORCHESTRION_API_KEYS and --keys-file (both may be given). With neither,
    refuse, unless --insecure-dev-key: then one key is generated for tenant "default"
    and printed once to stderr."""
    keys: dict[str, str] = {}
    try:
        if os.environ.get(KEYS_ENV, "").strip():
            keys.update(parse_keys(os.environ[KEYS_ENV]))
        if keys_file:
            for key, tenant in read_keys_file(keys_file).items():
                if key in keys:
                    raise KeyConfigError(
                        f"{keys_file}: a key is also given in ${KEYS_ENV} (each key once)"
                    )
                keys[key] = tenant
    except KeyConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if keys:
        return keys
    if not insecure_dev_key:
        raise click.ClickException(
            f"no API keys: set {KEYS_ENV}='KEY=tenantA,KEY2=tenantB' (keys of {KEY_HINT}) "
            "or give --keys-file FILE (one key=tenant per line); for local development "
            "only, --insecure-dev-key generates one"
        )
    key = generate_key()
    click.echo(f"insecure development key (tenant 'default'): {key}", err=True)
    return {key: "default"}


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="Your agents: an Agent or a list of them, as module:attribute or "
    "path/to/file.py:attribute. Without --app the service runs the demo agent.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="With --app: serve the demo agent (support) too, to every tenant.",
)
@click.option(
    "--default-agent",
    metavar="NAME",
    help="The agent of conversations created without one. Default: the first --app "
    "agent, else the demo agent (support).",
)
@click.option(
    "--keys-file",
    type=click.Path(exists=True, dir_okay=False),
    help=f"API keys, one key=tenant per line (also read: ${KEYS_ENV}).",
)
@click.option(
    "--insecure-dev-key",
    is_flag=True,
    help="With no keys configured, generate one (tenant 'default') and print it to stderr.",
)
@click.option("--max-body-bytes", type=click.IntRange(1), default=64 * 1024, show_default=True)
@click.option("--max-message-chars", type=click.IntRange(1), default=32_000, show_default=True)
@click.option(
    "--keepalive",
    type=click.FloatRange(0.1),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="SSE keep-alive comment interval while a stream waits.",
)
@click.option(
    "--grace",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM: how long open connections (streams) may take to close. Turns in "
    "flight are then awaited (they are durable: a worker resumes them if this process dies).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="A request's headers must arrive within this long (else 408, connection closed).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="A request's body must arrive within this long of its headers (else 408, closed).",
)
@click.pass_obj
def serve(
    settings: Any,
    host: str,
    port: int,
    app: str | None,
    demo: bool,
    default_agent: str | None,
    keys_file: str | None,
    insecure_dev_key: bool,
    max_body_bytes: int,
    max_message_chars: int,
    keepalive: float,
    grace: int,
    header_timeout: float,
    body_timeout: float,
) -> None:
    """Serve the HTTP API (conversations, SSE turns, runs, traces) on uvicorn.

    Every /v1 endpoint needs `Authorization: Bearer KEY`; each key is bound to a tenant.
    See docs/server.md."""
    import uvicorn

    from orchestrion.cli_common import agents_for
    from orchestrion.server.app import Limits, create_app
    from orchestrion.server.deadlines import server_config

    agents = agents_for(app, demo)
    if default_agent is None:  # the first of the app's agents, else the demo agent
        default_agent = agents[1 if app and demo else 0].name
    orx = settings.runtime(agents)
    # A busy port or an unusable store fails here, in one line, before anything is printed.
    sock = listen(host, port)
    asyncio.run(_check_store(settings))
    keys = load_keys(keys_file, insecure_dev_key)
    try:
        asgi = create_app(
            orx,
            keys=keys,
            limits=Limits(
                max_body_bytes=max_body_bytes,
                max_message_chars=max_message_chars,
                keepalive_seconds=keepalive,
                header_timeout_seconds=header_timeout,
                body_timeout_seconds=body_timeout,
            ),
            default_agent=default_agent,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"orchestrion serving on http://{host}:{sock.getsockname()[1]} ({len(keys)} API "
        f"key(s), agents: {', '.join(sorted(orx.agents))})",
        err=True,
    )
    config = server_config(  # uvicorn.Config, with the slow-client deadlines of the limits
        asgi,
        lifespan="on",
        timeout_graceful_shutdown=grace,
        log_level="info",
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or a one-line error (port in use, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (
            "the port is in use (choose another with --port)"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


async def _check_store(settings: Any) -> None:
    async with settings.open_store():
        pass
