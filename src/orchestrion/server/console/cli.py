"""`orchestrion console`: the web console for a local store, for one developer.

It listens on 127.0.0.1 only (by default), reads every tenant of the store, executes no
runs, and is opened with a key made for this process: the printed URL carries it in its
fragment (#key=...), which the browser keeps to itself; the page moves it to the tab's
session storage. Requests naming another host are refused (a web page cannot reach the
console by rebinding a domain name to 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from typing import Any

import click

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("console")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Anything but a loopback address shows every tenant's runs "
    "to whoever has the printed URL.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--open", "open_browser", is_flag=True, help="Open the console in a web browser.")
@click.pass_obj
def console(settings: Any, host: str, port: int, open_browser: bool) -> None:
    """Browse a local store's runs, traces, conversations and breakers in a web browser.

    Serves the web console (the one `orchestrion serve` has at /ui) for the store of
    --store, without API keys: it prints a URL with a key made for this process. It reads
    every tenant and starts no runs. See docs/console.md."""
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from orchestrion.server.app import create_app
    from orchestrion.server.auth import generate_key
    from orchestrion.server.cli import listen
    from orchestrion.server.deadlines import server_config

    # A busy port or a missing store fails here, in one line, before anything is printed.
    sock = listen(host, port)
    # Listening now: connections to the printed URL wait in the backlog until uvicorn
    # accepts them, rather than being refused while it starts.
    sock.listen(2048)
    asyncio.run(_check_store(settings))
    key = generate_key()
    app = create_app(settings.runtime(create=False), keys={}, operator_keys=[key])
    if _loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_NAMES, host])
    else:
        click.echo(
            f"warning: --host {host} is not a loopback address: whoever can reach it and "
            "has the URL below sees every tenant's runs",
            err=True,
        )
    shown = host if ":" not in host else f"[{host}]"
    url = f"http://{shown}:{sock.getsockname()[1]}/ui/#key={key}"
    click.echo(
        "orchestrion console: every tenant of the store; it starts no runs (Ctrl-C stops it)",
        err=True,
    )
    click.echo(url)
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = server_config(
        app, lifespan="on", timeout_graceful_shutdown=2, log_level="warning", server_header=False
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops gracefully, then raises Ctrl-C again
        click.echo("console stopped", err=True)
        return
    if not server.started:
        sys.exit(1)


async def _check_store(settings: Any) -> None:
    # The console only reads: it never creates a store (NoStore says where none is).
    async with settings.open_store(create=False):
        pass
