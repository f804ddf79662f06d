"""Commands that read what happened: `runs`, `show`, `history`, `trace`.

They never create a store: pointed at a place with no store, they say so (NoStore).
Every tenant's records are visible here: these are operator commands, run by whoever
can read the store anyway.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from orchestrion.cli_common import Settings, pass_settings, run
from orchestrion.errors import NotFound
from orchestrion.models.messages import Message
from orchestrion.observe.trace import render_text, shorten
from orchestrion.runtime import ConversationInfo, Orchestrion
from orchestrion.store.base import RunRecord


def format_time(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


async def _conversation(orx: Orchestrion, conversation_id: str) -> ConversationInfo:
    try:
        return await orx.conversation(conversation_id)
    except NotFound:
        raise NotFound(f"no conversation {conversation_id!r} in this store") from None


# ---- runs ----------------------------------------------------------------------------


def run_row(r: RunRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "conversation": r.conversation_id,
        "status": r.status,
        "agent": r.agent,
        "epoch": r.epoch,
        "created_at": r.created_at,
        "finished_at": r.finished_at,
        "error": r.error,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--conversation", metavar="ID", help="Only this conversation's runs.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@pass_settings
def runs(settings: Settings, as_json: bool, conversation: str | None, limit: int) -> None:
    """List runs, newest first: id, conversation, status, agent (and the error type of
    a failed run)."""

    async def go() -> list[RunRecord]:
        async with settings.runtime(create=False) as orx:
            if conversation is not None:
                await _conversation(orx, conversation)
            return await orx.store.list_runs(conversation_id=conversation, limit=limit)

    records = run(go())
    for r in records:
        if as_json:
            click.echo(json.dumps(run_row(r)))
        else:
            click.echo(
                f"{r.id}  {r.conversation_id}  {r.status:9}  {r.agent}"
                + (f"  {r.error['type']}" if r.error else "")
            )
    if not records and not as_json:
        click.echo(
            f"no runs in conversation {conversation!r} yet"
            if conversation
            else "no runs in this store yet (start one with `orchestrion demo`)"
        )


# ---- show ----------------------------------------------------------------------------


def describe_run(r: RunRecord, steps: int, message: str | None) -> list[tuple[str, str]]:
    """(label, value) lines that say what happened to a run."""
    lines = [
        ("run", r.id),
        ("status", r.status),
        ("agent", r.agent),
        ("conversation", f"{r.conversation_id} (tenant {r.tenant})"),
    ]
    if message is not None:
        lines.append(("message", shorten(message, 200)))
    if r.status == "succeeded" or (r.result or {}).get("answer"):
        lines.append(("answer", (r.result or {}).get("answer", "")))
    if r.error:
        lines.append(("error", f"{r.error.get('type')}: {r.error.get('message')}"))
    lines.append(("queued", format_time(r.created_at)))
    if r.started_at is not None:
        waited = format_seconds(max(0.0, r.started_at - r.created_at))
        lines.append(("started", f"{format_time(r.started_at)} (after {waited} in the queue)"))
    if r.finished_at is not None:
        began = r.started_at if r.started_at is not None else r.created_at
        took = format_seconds(max(0.0, r.finished_at - began))
        lines.append(("finished", f"{format_time(r.finished_at)} (took {took})"))
    elif r.status == "running" and r.lease_expires_at is not None:
        lines.append(("owner", f"{r.owner}, lease until {format_time(r.lease_expires_at)}"))
    claims = "claimed once" if r.epoch == 1 else f"claimed {r.epoch} times: resumed or handed back"
    lines.append(("epoch", f"{r.epoch} ({claims})" if r.epoch else "0 (not claimed yet)"))
    lines.append(("steps", f"{steps} recorded"))
    return lines


@click.command()
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The run as one JSON object.")
@pass_settings
def show(settings: Settings, run_id: str, as_json: bool) -> None:
    """What happened to a run: status, answer or error, timings, conversation, agent and
    how many steps it recorded (`orchestrion trace ID` shows the steps). ID is a run id,
    or a conversation id for that conversation's latest run."""

    async def go() -> tuple[RunRecord, int]:
        async with settings.runtime(create=False) as orx:
            try:
                record = await orx.store.get_run(run_id)
            except NotFound:
                try:
                    await orx.store.get_conversation(run_id)
                except NotFound:
                    raise NotFound(f"no run or conversation {run_id!r} in this store") from None
                latest = await orx.store.list_runs(conversation_id=run_id, limit=1)
                if not latest:
                    raise NotFound(f"conversation {run_id!r} has no runs yet") from None
                record = latest[0]
            return record, len(await orx.store.load_steps(record.id))

    record, steps = run(go())
    message = (record.input.get("message") or {}).get("content")
    if as_json:
        click.echo(json.dumps({**run_row(record), "tenant": record.tenant,
                               "message": message, "answer": (record.result or {}).get("answer"),
                               "started_at": record.started_at, "steps": steps}))
        return
    lines = describe_run(record, steps, message)
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        click.echo(f"{label:<{width}}  {value}")


# ---- history -------------------------------------------------------------------------


def message_lines(m: Message, names: dict[str, str]) -> list[str]:
    """A message as readable lines; tool results are cut to one line."""
    if m.role == "tool":
        name = m.name or names.get(m.tool_call_id or "", "?")
        error = " (error)" if m.is_error else ""
        return [f"tool {name}{error}: {shorten(m.content or '', 100)}"]
    lines = []
    if m.content:
        first, *rest = m.content.splitlines() or [""]
        lines.append(f"{m.role}: {first}")
        lines.extend(f"  {line}" for line in rest)
    for c in m.tool_calls:
        lines.append(f"{m.role if not m.content else ' '} -> {c.name}({shorten(c.arguments, 80)})")
    return lines or [f"{m.role}: (empty)"]


@click.command()
@click.argument("conversation_id", metavar="CONVERSATION")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
@click.option(
    "--last", type=click.IntRange(1), metavar="N", help="Only the last N messages."
)
@pass_settings
def history(settings: Settings, conversation_id: str, as_json: bool, last: int | None) -> None:
    """The messages of a conversation, oldest first: what the user said, the answers, the
    tool calls and their (shortened) results."""

    async def go() -> tuple[ConversationInfo, list[Message]]:
        async with settings.runtime(create=False) as orx:
            conversation = await _conversation(orx, conversation_id)
            return conversation, await orx.history(conversation_id)

    conversation, messages = run(go())
    shown = messages[-last:] if last else messages
    if as_json:
        for m in shown:
            click.echo(json.dumps(m.model_dump(mode="json", exclude_defaults=True)))
        return
    click.secho(
        f"conversation {conversation.id} · agent {conversation.agent} · tenant "
        f"{conversation.tenant} · {conversation.state} · {len(messages)} message(s)",
        dim=True,
    )
    if not messages:
        click.echo("no messages yet")
    elif len(shown) < len(messages):
        click.secho(f"(the last {len(shown)} of {len(messages)})", dim=True)
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    for m in shown:
        for line in message_lines(m, names):
            click.echo(line)


# ---- trace ---------------------------------------------------------------------------


@click.command()
@click.argument("id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per span.")
@pass_settings
def trace(settings: Settings, id: str, as_json: bool) -> None:
    """Print the span tree of a run, or of every run of a conversation."""

    async def go() -> list[Any]:
        async with settings.runtime(create=False) as orx:
            return await orx.trace(id)

    roots = run(go())
    if as_json:
        for root in roots:
            for span in root.walk():
                click.echo(json.dumps(span.to_json()))
    elif roots:
        click.echo(render_text(roots))
    else:
        click.echo(f"{id} has no recorded events yet")


__all__ = ["history", "runs", "show", "trace"]
