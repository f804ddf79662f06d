"""`orchestrion chaos ...`: run the chaos LLM server from the command line."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import click
import uvicorn
from pydantic import ValidationError

from orchestrion.chaos.plan import FAULTS, PRESETS, FaultPlan, describe_plan_error, preset
from orchestrion.chaos.server import ChaosApp


@click.group(name="chaos")
def chaos() -> None:
    """A fake LLM provider that misbehaves on purpose, to test agents against.

    It speaks OpenAI Chat Completions (/v1/chat/completions) and Anthropic Messages
    (/v1/messages), streaming or not, answers from a scripted conversation, and injects
    faults (429s, 5xx, hangs, cut streams, broken tool arguments, ...) chosen by a plan,
    a preset, or per request with the header `x-chaos-fault: KIND; key=value`.
    """


def _echo_call(entry: dict[str, Any]) -> None:
    fault = entry["fault"] or "-"
    extra = f" {json.dumps(entry['detail'])}" if entry["detail"] else ""
    click.echo(
        f"#{entry['call']} {entry['protocol']} stream={entry['stream']} fault={fault} "
        f"status={entry['status']}{extra}",
        err=True,
    )


@chaos.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: pick a free one).",
)
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Fault plan file (.json or .toml); see docs/chaos.md.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="A built-in fault plan (see `orchestrion chaos presets`).",
)
@click.option("--seed", type=int, help="Seed for probabilistic faults (overrides the plan's).")
@click.option(
    "--script",
    help="Scripted conversation: default, echo, text, or module:attribute (overrides the plan's).",
)
@click.option(
    "--chunk-delay",
    type=click.FloatRange(0),
    help="Seconds between stream events (overrides the plan's).",
)
@click.option(
    "--context-window",
    type=click.IntRange(1),
    help="Refuse prompts over this many tokens (characters / 4) with the provider's real "
    "context-length error (overrides the plan's).",
)
@click.option("-v", "--verbose", is_flag=True, help="Print one line per model call.")
def serve(
    host: str,
    port: int,
    plan_file: Path | None,
    preset: str | None,
    seed: int | None,
    script: str | None,
    chunk_delay: float | None,
    context_window: int | None,
    verbose: bool,
) -> None:
    """Run the chaos LLM server until interrupted.

    \b
    Point clients at it:
      OpenAI-compatible:  OPENAI_BASE_URL=http://HOST:PORT/v1
      Anthropic:          ANTHROPIC_BASE_URL=http://HOST:PORT
    (any API key is accepted). Inspect injections with GET /chaos/log,
    clear them with POST /chaos/reset.
    """
    if plan_file is not None and preset is not None:
        raise click.UsageError("give --plan or --preset, not both")
    try:
        plan = FaultPlan.load(plan_file) if plan_file is not None else _preset(preset or "none")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--plan") from None
    changes: dict[str, Any] = {}
    if seed is not None:
        changes["seed"] = seed
    if script is not None:
        changes["script"] = script
    if chunk_delay is not None:
        changes["chunk_delay"] = chunk_delay
    if context_window is not None:
        changes["context_window"] = context_window
    if changes:
        try:
            plan = FaultPlan.model_validate({**plan.model_dump(), **changes})
        except ValidationError as exc:
            raise click.UsageError(describe_plan_error(exc)) from None
    try:
        app = ChaosApp(plan, on_call=_echo_call if verbose else None)
    except (ValueError, ImportError, AttributeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--script") from None

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    bound = sock.getsockname()[1]
    url = f"http://{host}:{bound}"
    source = str(plan_file) if plan_file else f"preset {preset or 'none'}"
    click.echo(
        f"chaos server listening on {url}  ({source}, {len(plan.faults)} fault rule(s), "
        f"seed {plan.seed})\n"
        f"  OpenAI-compatible base URL: {url}/v1\n"
        f"  Anthropic base URL:         {url}\n"
        f"  injection log:              {url}/chaos/log",
    )
    sys.stdout.flush()
    config = uvicorn.Config(
        app.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _preset(name: str) -> FaultPlan:
    return preset(name)


@chaos.command()
def presets() -> None:
    """List the built-in fault plans."""
    for name, (description, plan) in sorted(PRESETS.items()):
        click.echo(f"{name:<14} {description}")
        for rule in plan.faults:
            how = (
                f"p={rule.probability}"
                if rule.probability is not None
                else f"every {rule.every}"
                if rule.every
                else "always"
            )
            click.echo(f"{'':<16}{rule.fault} ({how})")


@chaos.command()
def faults() -> None:
    """List the fault kinds and their parameters."""
    for name, description in FAULTS.items():
        click.echo(f"{name:<20} {description}")
    click.echo(
        "\nSelectors on any rule: probability, every, at, times, protocols, streaming.\n"
        "Per request: header `x-chaos-fault: KIND; param=value; ...` (or `none`)."
    )


if __name__ == "__main__":
    chaos()
