"""The `orchestrion` command: demo, worker, purge, bench, and the commands that live with
their concern (runs/show/history/trace, breakers, serve, chaos)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrion.chaos.cli import chaos
from orchestrion.cli_common import (
    DEBUG_ENV,
    OrchestrionGroup,
    Settings,
    agents_for,
    configure_logging,
    pass_settings,
)
from orchestrion.cli_common import run as _run
from orchestrion.engine.agent import Agent
from orchestrion.errors import NotFound, OrchestrionError
from orchestrion.observe.cli import history, runs, show, trace
from orchestrion.observe.public import (
    BreakerChanged,
    BreakerRejected,
    Event,
    FallbackUsed,
    RetryGaveUp,
    RetryScheduled,
    TextDelta,
    ToolCallStarted,
)
from orchestrion.observe.trace import render_text, shorten
from orchestrion.resilience.cli import breakers
from orchestrion.server.cli import serve
from orchestrion.server.console.cli import console
from orchestrion.store import default_store_url


@click.group(cls=OrchestrionGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Where runs live: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user@host:port/db?schema=NAME. Default: $ORCHESTRION_STORE, else "
    "sqlite:///orchestrion.db (a file in the current folder).",
)
@click.option(
    "--durability",
    type=click.Choice(["normal", "full"]),
    default="normal",
    show_default=True,
    help="normal survives a process crash; full also fsyncs every commit (power loss).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does to stderr.")
@click.option(
    "--debug",
    is_flag=True,
    help=f"Show the Python traceback of an error instead of one line (also: ${DEBUG_ENV}=1).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with run, conversation, trace and span ids.",
)
@click.version_option(package_name="orchestrion")
@click.pass_context
def main(
    ctx: click.Context,
    store: str | None,
    durability: str,
    verbose: bool,
    debug: bool,
    log_format: str,
) -> None:
    """orchestrion: durable, observable orchestration for LLM agents.

    Start with `orchestrion demo`: an offline customer-support agent whose every step is
    journaled in a SQLite file, so a crashed turn resumes without repeating its emails.
    Then `orchestrion runs`, `orchestrion show RUN`, `orchestrion history CONVERSATION`
    and `orchestrion trace ID` show what happened.
    """
    configure_logging(
        verbose=verbose, debug=debug or bool(os.environ.get(DEBUG_ENV)), log_format=log_format
    )
    if store is not None and not store.strip():
        raise click.BadParameter(
            "is empty: give a store URL such as sqlite:///app.db", param_hint="--store"
        )
    ctx.obj = Settings(
        store or default_store_url(), durability, store_given=store is not None, debug=debug
    )


# ---- demo ----------------------------------------------------------------------------------

TURN_OPTIONS = ("conversation", "message", "latency", "no_trace", "model_spec")


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source != click.core.ParameterSource.DEFAULT


def _not_blank(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("is empty: give some text")
    return value


@main.command()
@click.option(
    "--conversation",
    metavar="ID",
    callback=_not_blank,
    help="Continue this conversation (new one if omitted).",
)
@click.option("--message", metavar="TEXT", callback=_not_blank, help="What the customer says.")
@click.option(
    "--latency",
    type=click.FloatRange(0, 60),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Delay each scripted model call (and half as long inside each write tool), "
    "so a test can kill the process mid-turn.",
)
@click.option(
    "--outbox",
    is_flag=True,
    help="Instead of a turn, list the side effects the demo "
    "tools recorded (bookings and emails) with their idempotency keys.",
)
@click.option("--json", "as_json", is_flag=True, help="With --outbox: one JSON object per line.")
@click.option("--no-trace", is_flag=True, help="Do not print the trace after the answer.")
@click.option(
    "--model",
    "model_spec",
    metavar="SPEC",
    help="Run the demo agent on a real model instead of the scripted one: openai:MODEL "
    "(OPENAI_API_KEY, OPENAI_BASE_URL) or anthropic:MODEL (ANTHROPIC_API_KEY, "
    "ANTHROPIC_BASE_URL); scripted[:SCRIPT] is the chaos server's generic script. "
    "Default: the demo's own offline scripted model.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    conversation: str | None,
    message: str | None,
    latency: float,
    outbox: bool,
    as_json: bool,
    no_trace: bool,
    model_spec: str | None,
) -> None:
    """Run one turn of the offline customer-support demo (no API key, no network).

    The agent looks the customer up in a CRM, books an appointment and emails a
    confirmation; the answer streams, then the turn's trace prints.
    """
    from orchestrion.demo.support import DEFAULT_MESSAGE, support_agent

    settings: Settings = ctx.obj
    if outbox:
        given = [f"--{n.removesuffix('_spec').replace('_', '-')}" for n in TURN_OPTIONS
                 if _given(ctx, n)]
        if given:
            raise click.UsageError(
                f"--outbox lists the recorded side effects and runs no turn: drop "
                f"{', '.join(given)}"
            )
        _run(_print_outbox(settings, as_json))
        return
    if as_json:
        raise click.UsageError("--json applies to --outbox only (a turn streams as text)")
    model = None
    if model_spec:
        from orchestrion.models.resolve import resolve_model

        try:
            model = resolve_model(model_spec)
        except (OrchestrionError, ValueError, ImportError, AttributeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from None
    agent = support_agent(latency=latency, model=model)
    status = _run(
        _demo_turn(settings, agent, conversation, message or DEFAULT_MESSAGE, not no_trace)
    )
    if status != "succeeded":
        sys.exit(1)


def _demo_note(event: Event) -> str | None:
    """The line the demo prints for an event between the streamed words (None: none)."""
    match event:
        case ToolCallStarted(tool_name=name):
            return f"-> {name}"
        case RetryScheduled(reason=reason, delay=delay):
            return f"!! retry in {delay:.1f}s ({reason})"
        case RetryGaveUp(reason=reason, error=error):
            return f"!! gave up ({reason}){': ' + shorten(error, 100) if error else ''}"
        case FallbackUsed(option=option):
            return f"!! fallback: {option}"
        case BreakerChanged(breaker=breaker, to_state=state):
            return f"!! breaker {breaker} {state}"
        case BreakerRejected(breaker=breaker):
            return f"!! breaker {breaker} is open"
    return None


async def _demo_turn(
    settings: Settings, agent: Agent, conversation: str | None, message: str, show_trace: bool
) -> str:
    async with settings.runtime([agent]) as orx:
        # Submitted first: a refused turn (a closed conversation) is one line, no prompt.
        run_id = (await orx.submit(agent.name, message, conversation=conversation)).id
        click.secho(f"you: {message}", fg="cyan")
        click.echo("agent: ", nl=False)
        mid_line = True  # after the "agent: " prompt
        async for event in orx.events(run_id):
            note = _demo_note(event)
            if isinstance(event, TextDelta):
                click.echo(event.text, nl=False)
                mid_line = True
            elif note is not None:
                if mid_line:
                    click.echo("")
                click.secho(f"  {note}", dim=True)
                mid_line = False
        result = await orx.result(run_id)
        # The live end event can arrive before the run's completion commits (PostgreSQL):
        # report the durable status, which follows within moments.
        for _ in range(200):
            if result.status not in ("queued", "running"):
                break
            await asyncio.sleep(0.01)
            result = await orx.result(run_id)
        else:
            raise click.ClickException(
                f"run {run_id} finished but its end was not recorded in the store (see the "
                f"log above); `orchestrion show {run_id}` shows its state"
            )
        if result.status != "succeeded":
            click.echo(("\n" if mid_line else "") + result.answer)
        click.echo("\n" if mid_line and result.status == "succeeded" else "")
        click.secho(
            f"run {result.run_id} · conversation {result.conversation_id} · {result.status}",
            dim=True,
        )
        if show_trace:
            click.echo("")
            click.echo(render_text(await orx.trace(run_id)))
        return result.status


async def _print_outbox(settings: Settings, as_json: bool) -> None:
    async with settings.runtime(create=False) as orx:
        effects = await orx.store.list_effects()
    for e in effects:
        row = {
            "idempotency_key": e.idempotency_key,
            "kind": e.kind,
            "run_id": e.run_id,
            "conversation_id": e.conversation_id,
            "payload": e.payload,
            "created_at": e.created_at,
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{e.kind:8} {e.idempotency_key:30} {e.conversation_id:22} "
                f"{shorten(json.dumps(e.payload), 80)}"
            )
    if not effects and not as_json:
        click.echo("no side effects recorded yet (run `orchestrion demo` first)")


# ---- worker --------------------------------------------------------------------------------


@main.command()
@click.option("--drain", is_flag=True, help="Exit 0 once nothing is left that this worker can do.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="Runs executed at once by this process.",
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="Your agents: an Agent or a list of them, as module:attribute or "
    "path/to/file.py:attribute. Without --app the worker runs the demo agent.",
)
@click.option("--demo", is_flag=True, help="With --app: run the demo agent (support) too.")
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT: stop claiming, give runs in flight this long to finish, then "
    "hand the rest back to the queue for another worker. A second signal skips the wait.",
)
@pass_settings
def worker(
    settings: Settings, drain: bool, concurrency: int, app: str | None, demo: bool, grace: float
) -> None:
    """Execute queued runs and resume orphaned ones (whose owner died or lease expired).

    Several workers may share one store (a PostgreSQL one for a fleet of machines)."""
    import contextlib
    import signal

    agents = agents_for(app, demo)
    stopped_by: list[str] = []

    async def work() -> int:
        async with settings.runtime(agents) as orx:
            orx.worker.concurrency = concurrency
            stop, hurry = asyncio.Event(), asyncio.Event()

            def on_signal(name: str) -> None:
                stopped_by.append(name)
                if stop.is_set():
                    hurry.set()
                    return
                stop.set()
                active = orx.worker.active
                if active:
                    click.echo(
                        f"stopping: letting {active} run(s) in flight finish (up to {grace:g}s)",
                        err=True,
                    )

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, on_signal, sig.name)
            count = await orx.work(drain=drain, stop=stop, grace=grace, hurry=hurry)
            released = orx.worker.counts["released"]
            if stopped_by:
                click.echo(f"released {released} unfinished run(s) to the queue", err=True)
            return count

    try:
        count = _run(work())
    except KeyboardInterrupt:
        click.echo("worker stopped", err=True)
        return
    if stopped_by:
        click.echo(f"worker stopped ({stopped_by[0]})", err=True)
        return
    if drain:
        click.echo(f"drained: executed {count} run(s)")
        waiting = _run(_runs_of_unknown_agents(settings, {a.name for a in agents}))
        if waiting:
            listed = ", ".join(f"{name!r} in {n}" for name, n in sorted(waiting.items()))
            raise click.ClickException(
                f"{sum(waiting.values())} conversation(s) wait for runs of agents this worker "
                f"does not know ({listed}): run a worker whose --app defines them"
            )


async def _runs_of_unknown_agents(settings: Settings, known: set[str]) -> Counter[str]:
    """Conversations with queued runs of an agent not in `known`, by agent."""
    async with settings.open_store() as store:
        queued = await store.list_runs(status="queued", limit=10_000)
    return Counter(
        agent for agent, _ in {(r.agent, r.conversation_id) for r in queued if r.agent not in known}
    )


# ---- purge ---------------------------------------------------------------------------------


@main.command()
@pass_settings
def purge(settings: Settings) -> None:
    """Delete conversations past their TTL, with their runs, steps, events and effects."""

    async def go() -> None:
        async with settings.runtime(create=False) as orx:
            report = await orx.purge()
        click.echo(
            f"purged {report.conversations} conversation(s), {report.runs} run(s), "
            f"{report.events} event(s)"
        )

    _run(go())


# ---- close ---------------------------------------------------------------------------------


@main.command()
@click.argument("conversation_id", metavar="CONVERSATION")
@pass_settings
def close(settings: Settings, conversation_id: str) -> None:
    """Close a conversation: it takes no more turns (they are refused), and its history,
    runs and traces stay readable until it expires. Refused while a turn is queued or
    running (cancel it, or let it end, first)."""

    async def go() -> None:
        async with settings.runtime(create=False) as orx:
            try:
                info = await orx.close_conversation(conversation_id)
            except NotFound:
                raise NotFound(f"no conversation {conversation_id!r} in this store") from None
        expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.expires_at))
        click.echo(f"conversation {info.id} is closed: it takes no more turns")
        click.echo(
            f"its {info.message_count} message(s) stay readable until it expires ({expires}) "
            "and the purge deletes it"
        )

    _run(go())


# ---- bench ---------------------------------------------------------------------------------


def _bench_dir() -> Path:
    for candidate in (Path.cwd() / "bench", Path(__file__).resolve().parents[2] / "bench"):
        if (candidate / "README.md").is_file():
            return candidate
    raise click.ClickException(
        "benchmarks ship with the source checkout: run this from a clone of orchestrion "
        "(installed with `pip install -e .`)"
    )


@main.command()
@click.argument("name")
@click.option("--quick", is_flag=True, help="A small workload, to check the benchmark runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw numbers as JSON.")
@click.option(
    "--store",
    "bench_store",
    metavar="URL",
    help="The same as the global --store (`orchestrion --store URL bench steps`).",
)
@pass_settings
def bench(
    settings: Settings, name: str, quick: bool, as_json: bool, bench_store: str | None
) -> None:
    """Run a benchmark from bench/ (steps, peers, concurrency, fleet, streaming, reads,
    context, resilience, arguments, providers, otel; bench/README.md says what each
    measures).

    Each prints its numbers next to a baseline measured in the same run. Benchmarks that
    measure a store (steps, peers, concurrency, fleet, reads, resilience) use the --store
    given on the command line, in throwaway
    schemas (PostgreSQL) or files next to it (SQLite); without --store, temporary SQLite
    files. $ORCHESTRION_STORE is not used: a benchmark never writes into your store by
    accident."""
    store = settings.store if settings.store_given else None
    if bench_store is not None and store is not None and bench_store != store:
        raise click.UsageError("--store is given twice with different URLs: give it once")
    store = bench_store or store
    folder = _bench_dir()
    path = folder / f"{name}.py"
    if not path.is_file():
        available = ", ".join(
            sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
        )
        raise click.ClickException(f"no benchmark {name!r}; available: {available}")
    spec = importlib.util.spec_from_file_location(f"orchestrion_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    benchmark: Callable[..., dict[str, Any]] = module.run
    if store is None:
        result = benchmark(quick=quick)
    elif "store" not in inspect.signature(benchmark).parameters:
        raise click.BadParameter(
            f"benchmark {name!r} measures no store: drop --store", param_hint="--store"
        )
    else:
        try:
            result = benchmark(quick=quick, store=store)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "lines"}, indent=2))
    else:
        click.echo("\n".join(result["lines"]))


# Commands that live with their concern join the group here.
for command in (runs, show, history, trace, breakers, serve, console, chaos):
    main.add_command(command)
