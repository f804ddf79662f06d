"""What every `orchestrion` subcommand shares: the global settings, opening the store, and
turning failures into one line on stderr (a traceback only with `--debug`)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import click

from orchestrion.apps import AppLoadError, load_agents
from orchestrion.engine.agent import Agent
from orchestrion.errors import OrchestrionError
from orchestrion.runtime import Orchestrion
from orchestrion.store import Store, open_store
from orchestrion.store.base import Durability

T = TypeVar("T")

DEBUG_ENV = "ORCHESTRION_DEBUG"


class Settings:
    """The global options, handed to every subcommand (`click.pass_obj`)."""

    def __init__(
        self, store: str, durability: str, *, store_given: bool = False, debug: bool = False
    ) -> None:
        self.store = store
        self.durability = durability
        # Whether --store was given on this command line (not taken from the environment).
        self.store_given = store_given
        self.debug = debug

    def open_store(self, *, create: bool = True) -> Store:
        """The store, not yet opened. `create=False` for commands that only read: they
        fail with NoStore rather than create an empty store."""
        durability: Durability = "full" if self.durability == "full" else "normal"
        return open_store(self.store, durability=durability, create=create)

    def runtime(self, agents: Iterable[Agent] = (), *, create: bool = True) -> Orchestrion:
        return Orchestrion(self.open_store(create=create), agents=agents)


pass_settings = click.make_pass_decorator(Settings)


def agents_for(app: str | None, demo: bool) -> list[Agent]:
    """The agents of `--app` (refused clearly when it cannot be loaded), plus the demo
    agent when asked for with --demo, or when no --app is given (so `orchestrion worker`
    and `orchestrion serve` run the quickstart and the demo out of the box)."""
    from orchestrion.demo.support import support_agent

    try:
        agents = load_agents(app) if app else []
    except AppLoadError as exc:
        raise click.ClickException(f"--app: {exc}") from None
    if demo or not app:
        clash = [a.name for a in agents if a.name == "support"]
        if clash:
            raise click.ClickException(
                "--demo adds the demo agent 'support', and the app defines an agent of that "
                "name too: drop --demo (or rename the app's agent)"
            )
        agents.insert(0, support_agent())
    names = [a.name for a in agents]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise click.ClickException(f"--app: two agents are named {twice[0]!r}")
    return agents


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def describe_error(exc: BaseException) -> str:
    """One line for an error a user can act on; unexpected ones say how to see more."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return describe_error(exc.exceptions[0])  # one failure out of a TaskGroup
    if isinstance(exc, OrchestrionError):
        return _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        reason = exc.strerror or _one_line(str(exc)) or type(exc).__name__
        return f"{reason}{where}"
    if isinstance(exc, sqlite3.Error):
        return f"SQLite: {_one_line(str(exc))}"
    detail = _one_line(str(exc))
    return (
        f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} (rerun with "
        "`orchestrion --debug ...` to see the traceback, and please report it)"
    )


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines)


class OneLineLogFormatter(logging.Formatter):
    """Log records on one line each: an exception logged with its traceback (a background
    task that failed, a store that could not be synced) shows as `(Type: message)` unless
    --debug asks for the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            line = " ".join(super().format(record).split("\n"))
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        if exc_info and exc_info[1] is not None:
            line += f" ({type(exc_info[1]).__name__}: {_one_line(str(exc_info[1]))})"
        return line


def configure_logging(*, verbose: bool, debug: bool, log_format: str = "text") -> None:
    level = logging.INFO if verbose else logging.WARNING
    if log_format == "json":  # one JSON object per line (tracebacks inside the object)
        from orchestrion.observe.logs import configure_logging as configure_json

        configure_json("json", level=level)
        return
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if debug else OneLineLogFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


class OrchestrionGroup(click.Group):
    """A click group whose subcommands never end in a traceback: every exception becomes
    `Error: ...` on stderr and exit code 1 (click's usage errors keep exit code 2), unless
    --debug (or $ORCHESTRION_DEBUG) asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or os.environ.get(DEBUG_ENV):
                raise
            raise click.ClickException(describe_error(exc)) from None


__all__ = [
    "DEBUG_ENV",
    "OneLineLogFormatter",
    "OrchestrionGroup",
    "Settings",
    "agents_for",
    "configure_logging",
    "describe_error",
    "pass_settings",
    "run",
]
