"""Rebuild the tree of a run (or of a whole conversation) from its stored events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrion.observe.events import STREAM_TYPES
from orchestrion.store.base import EventRecord, RunRecord


@dataclass
class Span:
    span_id: str
    parent_span_id: str | None
    trace_id: str
    run_id: str
    name: str
    type: str
    start: float
    end: float | None = None
    latency_ms: float | None = None
    status: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[Span] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.end is not None

    def walk(self) -> list[Span]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "run_id": self.run_id,
            "name": self.name,
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "latency_ms": self.latency_ms,
            "status": self.status,
            "attributes": self.attributes,
        }


def build_run_tree(events: list[EventRecord]) -> list[Span]:
    """Group events by span id (a span's start and end events merge into one node) and
    link nodes to their parents. Returns the roots (normally one: the run's span).

    A step re-executed after a crash has several start events under one span id: its
    span starts at the last of them (the attempt whose result was recorded), so its
    duration leaves out the time the dead process held it; `attempts` counts the starts.
    The run's span names the owner that resumed it last (the one that finished it)."""
    spans: dict[str, Span] = {}
    order: list[str] = []
    resumes: list[EventRecord] = []
    for e in events:
        if e.seq == 0 or e.type in STREAM_TYPES:
            continue  # streamed text is content, not a span
        if e.type == "run.resumed":
            resumes.append(e)
        span = spans.get(e.span_id)
        if span is None:
            span = Span(
                span_id=e.span_id,
                parent_span_id=e.parent_span_id,
                trace_id=e.trace_id,
                run_id=e.run_id,
                name=e.name,
                type=e.type,
                start=e.start,
                attributes=dict(e.attributes),
            )
            spans[e.span_id] = span
            order.append(e.span_id)
        else:
            span.attributes.update(e.attributes)
            if e.parent_span_id is not None:
                span.parent_span_id = e.parent_span_id
            if e.type == "step.started" and span.end is None:
                # Started again by a new owner: this attempt is the one that counts.
                span.start = e.start
                span.attributes["attempts"] = int(span.attributes.get("attempts", 1)) + 1
            elif e.type == "step.finished":
                span.start = e.start  # the start of the attempt that recorded the result
            else:
                span.start = min(span.start, e.start)
        if e.end is not None:
            span.end, span.status, span.type = e.end, e.status, e.type
            span.latency_ms = round((span.end - span.start) * 1000, 3)
    roots: list[Span] = []
    for span_id in order:
        span = spans[span_id]
        parent = spans.get(span.parent_span_id or "")
        if parent is not None and parent is not span:
            parent.children.append(span)
        else:
            roots.append(span)
    if resumes:
        last = resumes[-1].attributes
        for root in roots:
            if root.type in ("run.started", "run.finished"):
                if "owner" in root.attributes and root.attributes["owner"] != last.get("owner"):
                    root.attributes["first_owner"] = root.attributes["owner"]
                root.attributes["owner"] = last.get("owner")
                root.attributes["epoch"] = last.get("epoch")
    for span in spans.values():
        span.children.sort(key=lambda s: s.start)
    return roots


def conversation_tree(runs: list[tuple[RunRecord, list[EventRecord]]]) -> list[Span]:
    """One root per run, oldest first."""
    roots: list[Span] = []
    for _run, events in sorted(runs, key=lambda pair: pair[0].position):
        roots.extend(build_run_tree(events))
    return roots


def _label(span: Span) -> str:
    a = span.attributes
    if span.type == "state.changed":
        return f"state {a.get('from')} -> {a.get('to')}"
    if span.type == "model.response":
        calls = a.get("tool_calls") or []
        usage = f"in={a.get('gen_ai.usage.input_tokens')} out={a.get('gen_ai.usage.output_tokens')}"
        return f"response {usage}" + (f" calls={','.join(calls)}" if calls else "")
    if span.type == "tool.result":
        return f"result{' (error)' if a.get('is_error') else ''}: {_short(a.get('result'))}"
    if span.type == "tool.progress":
        return f"progress: {a.get('message')}"
    if span.type == "run.resumed":
        steps = a.get("recorded_steps")
        return f"resume: epoch {a.get('epoch')} by {a.get('owner')}, {steps} steps recorded"
    if span.type == "context.summary.failed":
        return f"context summary failed ({a.get('error.type')}): the window was used"
    if a.get("attempts"):
        return f"{span.name} (re-executed after a resume: {a['attempts']} starts)"
    return _resilience_label(span.type, a) or span.name + _context_label(a)


def _context_label(a: dict[str, Any]) -> str:
    """What a model request was made of, when its context policy left something out."""
    if not (a.get("context.trimmed") or a.get("context.summary") or a.get("context.shrunk")):
        return ""
    parts = [
        f"{a.get('context.message_count')} messages ~{a.get('context.estimated_tokens')} tokens"
    ]
    if a.get("context.trimmed"):
        parts.append(f"{a['context.trimmed']} left out")
    if a.get("context.summary"):
        parts.append(f"summary to #{a.get('context.summary.last_index')}")
    if a.get("context.shrunk"):
        parts.append("shrunk after a context-length error")
    return f" (context: {', '.join(parts)})"


def _resilience_label(kind: str, a: dict[str, Any]) -> str | None:
    if kind == "retry.attempt":
        failure = f": {a.get('error_type')}: {_short(a.get('error'), 50)}" if a.get("error") else ""
        return f"attempt {a.get('attempt')} {a.get('outcome')}{failure}"
    if kind == "retry.wait":
        delay = float(a.get("delay") or 0)
        return f"wait {delay:.2f}s before attempt {a.get('next_attempt')} ({a.get('reason')})"
    if kind == "retry.giveup":
        return f"gave up after attempt {a.get('attempt')}: {a.get('reason')}"
    if kind == "breaker.transition":
        return f"breaker {a.get('breaker')}: {a.get('from')} -> {a.get('to')}"
    if kind == "breaker.rejected":
        return f"breaker {a.get('breaker')} is {a.get('state')}: call refused"
    if kind in ("fallback.used", "fallback.failed"):
        return f"{kind.replace('.', ' ')}: {a.get('option')}"
    if kind == "tool.arguments.repaired":
        return f"arguments repaired: {'; '.join(a.get('repairs') or [])}"
    if kind == "tool.arguments.invalid":
        return f"arguments {a.get('status')} ({a.get('decision')}): {_short(a.get('error'), 60)}"
    if kind.startswith("hedge."):
        return f"{kind}: hedge {a.get('hedge', a.get('winner', ''))}"
    return None


def shorten(value: Any, limit: int = 70) -> str:
    """`value` as one line of at most `limit` characters, cut at a word boundary with `…`."""
    text = " ".join(str(value).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    boundary = max(cut.rfind(" "), cut.rfind(","))  # commas: compact JSON has no spaces
    if boundary >= limit // 2:  # not too far back
        cut = cut[:boundary]
    return cut.rstrip(" ,;:") + "…"


_short = shorten


def render_text(roots: list[Span]) -> str:
    lines: list[str] = []

    def visit(span: Span, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        if span.end is None:
            timing = "UNFINISHED"
        elif span.latency_ms and span.end != span.start:
            timing = f"{span.latency_ms:.1f} ms"
        else:
            timing = ""
        status = span.status or ""
        extra = ""
        if span.type in ("run.started", "run.finished"):
            extra = f" [{span.run_id}] {span.attributes.get('run.status', 'running')}"
        line = f"{prefix}{branch}{_label(span)}{extra}"
        tail = "  ".join(p for p in (timing, status if status not in ("ok", "") else "") if p)
        lines.append(f"{line}  {tail}".rstrip())
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(span.children):
            visit(child, child_prefix, i == len(span.children) - 1, False)

    for root in roots:
        visit(root, "", True, True)
    return "\n".join(lines)
