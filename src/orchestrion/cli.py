"""The `orchestrion` command: demo, worker, runs, trace, purge, bench."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrion.chaos.cli import chaos
from orchestrion.engine.agent import Agent
from orchestrion.errors import OrchestrionError
from orchestrion.observe.logs import configure_logging
from orchestrion.observe.trace import render_text
from orchestrion.resilience.cli import breakers
from orchestrion.runtime import Orchestrion
from orchestrion.server.cli import serve
from orchestrion.store import default_store_url

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except OrchestrionError as exc:
        raise click.ClickException(str(exc)) from None


def _load_app_agents(spec: str | None) -> list[Agent]:
    """`module:attribute` naming an Agent, or a list/tuple of them."""
    if not spec:
        return []
    module_name, _, attribute = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules of this folder import
    if not attribute:
        raise click.BadParameter(
            "expected module:attribute, e.g. myapp.agents:support", param_hint="--app"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="--app"
        ) from None
    value = getattr(module, attribute, None)
    agents = value if isinstance(value, list | tuple) else [value]
    if not agents or not all(isinstance(a, Agent) for a in agents):
        raise click.BadParameter(f"{spec} is not an Agent or a list of Agents", param_hint="--app")
    return list(agents)


class Settings:
    def __init__(self, store: str, durability: str) -> None:
        self.store = store
        self.durability = durability

    def runtime(self, agents: list[Agent] | None = None) -> Orchestrion:
        return Orchestrion(self.store, agents=agents or [], durability=self.durability)  # type: ignore[arg-type]


pass_settings = click.make_pass_decorator(Settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    default=None,
    metavar="URL",
    help="Where runs live. Default: $ORCHESTRION_STORE, else sqlite:///orchestrion.db "
    "(a file in the current folder).",
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
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with run, conversation, trace and span ids.",
)
@click.version_option(package_name="orchestrion")
@click.pass_context
def main(
    ctx: click.Context, store: str | None, durability: str, verbose: bool, log_format: str
) -> None:
    """orchestrion: durable, observable orchestration for LLM agents.

    Start with `orchestrion demo`: an offline customer-support agent whose every step is
    journaled in a SQLite file, so a crashed turn resumes without repeating its emails.
    """
    level = logging.INFO if verbose else logging.WARNING
    if log_format == "json":
        configure_logging("json", level=level)
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
        )
    if store is not None and not store.strip():
        raise click.BadParameter(
            "is empty: give a store URL such as sqlite:///app.db", param_hint="--store"
        )
    ctx.obj = Settings(store or default_store_url(), durability)


# ---- demo ----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--conversation", metavar="ID", help="Continue this conversation (new one if omitted)."
)
@click.option("--message", metavar="TEXT", help="What the customer says.")
@click.option(
    "--latency",
    type=float,
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
    "ANTHROPIC_BASE_URL). Default: the offline scripted model.",
)
@pass_settings
def demo(
    settings: Settings,
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

    if outbox:
        _run(_print_outbox(settings, as_json))
        return
    model = None
    if model_spec:
        from orchestrion.models.resolve import resolve_model

        try:
            model = resolve_model(model_spec)
        except OrchestrionError as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from None
    agent = support_agent(latency=latency, model=model)
    status = _run(
        _demo_turn(settings, agent, conversation, message or DEFAULT_MESSAGE, not no_trace)
    )
    if status != "succeeded":
        sys.exit(1)


async def _demo_turn(
    settings: Settings, agent: Agent, conversation: str | None, message: str, show_trace: bool
) -> str:
    async with settings.runtime([agent]) as orx:
        run_id = ""
        click.secho(f"you: {message}", fg="cyan")
        click.echo("agent: ", nl=False)
        mid_line = True  # after the "agent: " prompt
        async for event in orx.stream(agent.name, message, conversation=conversation):
            run_id = event.run_id
            if event.type == "text.delta":
                click.echo(event.attributes["text"], nl=False)
                mid_line = True
            elif event.type == "step.started" and event.name.startswith("execute_tool"):
                if mid_line:
                    click.echo("")
                click.secho(f"  -> {event.name.removeprefix('execute_tool ')}", dim=True)
                mid_line = False
            elif event.type in ("retry.wait", "retry.giveup", "fallback.used") or (
                event.type.startswith("breaker.")
            ):
                if mid_line:
                    click.echo("")
                click.secho(f"  !! {event.type} {event.attributes.get('reason', '')}", dim=True)
                mid_line = False
        result = await orx.result(run_id)
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
    async with settings.runtime() as orx:
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
                f"{json.dumps(e.payload)[:80]}"
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
    help="Your agents (an Agent or a list of them), besides the built-in demo agent.",
)
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
    settings: Settings, drain: bool, concurrency: int, app: str | None, grace: float
) -> None:
    """Execute queued runs and resume orphaned ones (whose owner died or lease expired).

    Several workers may share one store (a PostgreSQL one for a fleet of machines)."""
    import contextlib
    import signal

    from orchestrion.demo.support import support_agent

    agents = [support_agent(), *_load_app_agents(app)]
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


# ---- runs / trace / purge ------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--conversation", metavar="ID", help="Only this conversation's runs.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@pass_settings
def runs(settings: Settings, as_json: bool, conversation: str | None, limit: int) -> None:
    """List runs, newest first."""

    async def go() -> None:
        async with settings.runtime() as orx:
            records = await orx.store.list_runs(conversation_id=conversation, limit=limit)
        for r in records:
            row = {
                "id": r.id,
                "conversation": r.conversation_id,
                "status": r.status,
                "agent": r.agent,
                "epoch": r.epoch,
                "created_at": r.created_at,
                "finished_at": r.finished_at,
                "error": r.error,
            }
            if as_json:
                click.echo(json.dumps(row))
            else:
                click.echo(
                    f"{r.id}  {r.conversation_id}  {r.status:9}  {r.agent}"
                    + (f"  {r.error['type']}" if r.error else "")
                )

    _run(go())


@main.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per span.")
@pass_settings
def trace(settings: Settings, id: str, as_json: bool) -> None:
    """Print the span tree of a run, or of every run of a conversation."""

    async def go() -> None:
        async with settings.runtime() as orx:
            roots = await orx.trace(id)
        if as_json:
            for root in roots:
                for span in root.walk():
                    click.echo(json.dumps(span.to_json()))
        else:
            click.echo(render_text(roots))

    _run(go())


@main.command()
@pass_settings
def purge(settings: Settings) -> None:
    """Delete conversations past their TTL, with their runs, steps, events and effects."""

    async def go() -> None:
        async with settings.runtime() as orx:
            report = await orx.purge()
        click.echo(
            f"purged {report.conversations} conversation(s), {report.runs} run(s), "
            f"{report.events} event(s)"
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
    help="Benchmarks that support it (steps) measure this store instead of a temporary "
    "SQLite file, e.g. postgresql://user@host:5432/db (in throwaway schemas).",
)
def bench(name: str, quick: bool, as_json: bool, bench_store: str | None) -> None:
    """Run a benchmark from bench/ (steps, resilience, arguments, providers, ...).

    Each prints its numbers next to a baseline measured in the same run."""
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
    run: Callable[..., dict[str, Any]] = module.run
    if bench_store is not None:
        import inspect

        if "store" not in inspect.signature(run).parameters:
            raise click.BadParameter(
                f"benchmark {name!r} has no store option", param_hint="--store"
            )
        try:
            result = run(quick=quick, store=bench_store)
        except (OrchestrionError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    else:
        result = run(quick=quick)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "lines"}, indent=2))
    else:
        click.echo("\n".join(result["lines"]))


# Commands that live with their concern join the group here.
main.add_command(chaos)
main.add_command(breakers)
main.add_command(serve)
