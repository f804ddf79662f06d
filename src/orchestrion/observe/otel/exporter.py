"""OpenTelemetry spans built from a run's committed events (replay-safe by construction).

The engine hands every batch of events to `OtelExporter.on_committed` once the store has
committed it, in the process that executes the run. Spans are built from those events:

- `invoke_agent {agent}`: the run (the turn), ended by `run.finished`;
- `chat {model}`: a model step, `execute_tool {tool}`: a tool step, opened by
  `step.started` and ended by `step.finished` with the times the events carry;
- retries, breaker decisions, fallbacks, argument repairs, state changes, progress:
  span events of the span the event belongs to.

Ids are orchestrion's own (the run's trace id, the events' span ids), so `orchestrion
trace` and a tracing backend name the same spans. Replayed steps write no events, hence
no spans. A run resumed in another process starts from what the store holds: a step the
dead process had started becomes one span, from its first start, with a `resumed` event
where it started again; what the dead process never finished it never exported. Spans it
finished but had not yet flushed (the batch processor's delay) are lost with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from orchestrion.engine.agent import Agent
from orchestrion.observe.events import run_span_id
from orchestrion.observe.otel import attributes as attrs
from orchestrion.observe.otel.ids import own_ids, using_ids
from orchestrion.observe.otel.metrics import Metrics
from orchestrion.observe.otel.version import VERSION
from orchestrion.observe.traceparent import TraceParent, parse_traceparent
from orchestrion.store.base import EventRecord, RunRecord, Store

log = logging.getLogger("orchestrion.telemetry")

# Runs whose spans saw no event for this long were lost by this process (its lease was
# taken over): their state is dropped, unexported; the new owner exports them.
STALE_SECONDS = 3600.0
SWEEP_EVERY = 256  # new runs between sweeps

BreakerSink = Callable[[str, dict[str, Any]], None]


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


# ---- per-run state ----------------------------------------------------------------------------


@dataclass
class _Step:
    span: Span
    kind: str  # gen_ai.operation.name: chat, execute_tool, or "" for other steps
    attempt_start: float  # when this process started it (a resumed step began earlier)
    model: attrs.ModelInfo | None = None
    response: dict[str, Any] = field(default_factory=dict)
    first_chunk: float | None = None
    tool_error: bool = False


@dataclass
class _Interrupted:
    """A step a previous owner started and never finished."""

    started: EventRecord
    restarts: list[float] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


@dataclass
class _Run:
    run_id: str
    first_seq: int
    backlog: list[EventRecord] = field(default_factory=list)
    ready: bool = False
    broken: bool = False  # its span could not be started: its events are ignored
    record: RunRecord | None = None
    agent: Agent | None = None
    root: Span | None = None
    root_context: context_api.Context | None = None
    common: dict[str, AttributeValue] = field(default_factory=dict)
    steps: dict[str, _Step] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    interrupted: dict[str, _Interrupted] = field(default_factory=dict)
    early: dict[str, list[EventRecord]] = field(default_factory=dict)  # before their step
    touched: float = field(default_factory=time.monotonic)


class OtelExporter:
    """Spans and metrics of the runs this process executes."""

    def __init__(
        self,
        *,
        store: Store,
        agents: Mapping[str, Agent],
        tracer_provider: trace_api.TracerProvider | None,
        meter_provider: MeterProvider | None,
        capture_content: bool = False,
        owned: list[object] | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.capture = capture_content
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.owned = owned or []
        self.tracer: trace_api.Tracer = (
            tracer_provider.get_tracer("orchestrion", VERSION)
            if tracer_provider is not None
            else trace_api.NoOpTracer()
        )
        if tracer_provider is not None and not own_ids(self.tracer):
            log.warning(
                "tracer provider %s is not the OpenTelemetry SDK's: spans get its ids, "
                "not orchestrion's",
                type(tracer_provider).__name__,
            )
        self.metrics = Metrics(meter_provider) if meter_provider is not None else None
        self._runs: dict[str, _Run] = {}
        self._loading: set[asyncio.Task[None]] = set()
        self._new_runs = 0

    # ---- the engine's hooks ---------------------------------------------------------------

    def on_committed(self, events: list[EventRecord]) -> None:
        """Events of one run, just committed, in sequence order. Never raises."""
        try:
            for event in events:
                self._receive(event)
        except Exception:  # telemetry must never break a run
            log.exception("OpenTelemetry export failed for %d events", len(events))

    def breaker_sink(self, then: BreakerSink | None) -> BreakerSink:
        """The breaker registry's process-wide event sink, counting transitions."""

        def sink(type_: str, attributes: dict[str, Any]) -> None:
            if self.metrics is not None:
                self.metrics.breaker_event(type_, attributes)
            if then is not None:
                then(type_, attributes)

        return sink

    def ambient_parent(self) -> TraceParent | None:
        """The caller's current OpenTelemetry span, as the parent of a run it submits."""
        context = trace_api.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return TraceParent(
            trace_api.format_trace_id(context.trace_id),
            trace_api.format_span_id(context.span_id),
            sampled=context.trace_flags.sampled,
        )

    async def aclose(self) -> None:
        """Finish loading, then send what was recorded: the providers built here are shut
        down (which flushes them), the application's are flushed. Signals go in parallel,
        so an unreachable collector costs one export timeout, not one per signal."""
        while self._loading:
            await asyncio.gather(*list(self._loading), return_exceptions=True)
        calls = []
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is None:
                continue
            name = "shutdown" if any(provider is p for p in self.owned) else "force_flush"
            method = getattr(provider, name, None)
            if method is not None:
                calls.append(asyncio.to_thread(method))
        await asyncio.gather(*calls, return_exceptions=True)

    # ---- receiving ------------------------------------------------------------------------

    def _receive(self, event: EventRecord) -> None:
        if event.seq == 0:
            return  # live-only text, never committed
        run = self._runs.get(event.run_id)
        if run is None:
            run = self._runs[event.run_id] = _Run(event.run_id, first_seq=event.seq)
            self._start_loading(run)
        run.touched = time.monotonic()
        if run.broken:
            return
        if not run.ready:
            run.backlog.append(event)
            return
        self._handle(run, event)

    def _start_loading(self, run: _Run) -> None:
        self._new_runs += 1
        if self._new_runs % SWEEP_EVERY == 0:
            self._sweep()
        task = asyncio.get_running_loop().create_task(self._load(run))
        self._loading.add(task)
        task.add_done_callback(self._loading.discard)

    def _sweep(self) -> None:
        cutoff = time.monotonic() - STALE_SECONDS
        for run_id in [r.run_id for r in self._runs.values() if r.touched < cutoff]:
            del self._runs[run_id]

    async def _load(self, run: _Run) -> None:
        """What the store knew of the run before this process wrote to it: the record,
        the caller's traceparent, and a previous owner's events."""
        prior: list[EventRecord] = []
        try:
            run.record = await self.store.get_run(run.run_id)
            after = 0
            while True:
                page = await self.store.read_events(run.run_id, after_seq=after)
                earlier = [e for e in page if e.seq < run.first_seq]
                prior.extend(earlier)
                if len(earlier) < len(page) or not earlier:
                    break
                after = earlier[-1].seq
        except Exception:
            log.exception("run %s: could not read its record; exporting without it", run.run_id)
        try:
            self._begin(run, prior)
        except Exception:
            run.broken = True
            log.exception("OpenTelemetry export of run %s failed; its spans are lost", run.run_id)
            return
        run.ready = True
        backlog, run.backlog = run.backlog, []
        self.on_committed(backlog)

    # ---- the run's span -------------------------------------------------------------------

    def _begin(self, run: _Run, prior: list[EventRecord]) -> None:
        record = run.record
        first = run.backlog[0] if run.backlog else None
        agent_name = record.agent if record else _agent_of(first)
        run.agent = self.agents.get(agent_name) if agent_name else None
        trace_id = record.trace_id if record else (first.trace_id if first else None)
        conversation_id = record.conversation_id if record else None
        common: dict[str, AttributeValue] = {"orchestrion.run.id": run.run_id}
        if agent_name:
            common["gen_ai.agent.name"] = agent_name
        if conversation_id:
            common["gen_ai.conversation.id"] = conversation_id
        run.common = common

        root_attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            **common,
        }
        if run.agent is not None:
            main = attrs.model_info(run.agent.model, run.agent.model.name)
            root_attributes["gen_ai.provider.name"] = main.provider
            root_attributes["gen_ai.request.model"] = main.model
        if record is not None:
            root_attributes["orchestrion.tenant"] = record.tenant
        if self.capture:
            root_attributes.update(self._turn_input(run))

        parent = _traceparent(prior)
        context = context_api.Context()  # a new trace, whatever span the caller is in
        if parent is not None:
            remote = trace_api.SpanContext(
                int(parent.trace_id, 16),
                int(parent.span_id, 16),
                is_remote=True,
                trace_flags=trace_api.TraceFlags(0x01 if parent.sampled else 0x00),
            )
            context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote), context)
        started = (record.started_at if record else None) or _earliest(prior, run.backlog)
        with using_ids(run_span_id(run.run_id), trace_id):
            run.root = self.tracer.start_span(
                f"invoke_agent {agent_name}" if agent_name else "invoke_agent",
                context=context,
                kind=SpanKind.INTERNAL,
                attributes=root_attributes,
                start_time=_ns(started),
            )
        run.root_context = trace_api.set_span_in_context(run.root)
        self._adopt_prior(run, prior)

    def _turn_input(self, run: _Run) -> dict[str, AttributeValue]:
        out: dict[str, AttributeValue] = {}
        message = (run.record.input.get("message") if run.record else None) or {}
        if isinstance(message, dict) and message.get("content"):
            out["gen_ai.input.messages"] = attrs.text_messages("user", str(message["content"]))
        if run.agent is not None and run.agent.instructions:
            out["gen_ai.system_instructions"] = attrs.system_instructions(run.agent.instructions)
        return out

    def _adopt_prior(self, run: _Run, prior: list[EventRecord]) -> None:
        """A previous owner's events: steps it left unfinished become this process's to
        export; what happened at the run's level goes on the run's span."""
        root_id = run_span_id(run.run_id)
        finished = {e.span_id for e in prior if e.type == "step.finished"}
        for e in prior:
            if e.type == "step.started" and e.span_id not in finished:
                known = run.interrupted.get(e.span_id)
                if known is None:
                    run.interrupted[e.span_id] = _Interrupted(e)
                else:
                    known.restarts.append(e.start)
        for e in prior:
            if e.type in ("step.started", "step.finished", "run.started", "run.queued"):
                continue
            if e.type in ("text.delta", "text.reset", "model.response", "tool.result"):
                continue  # an unfinished step's partial answer: re-done by the new owner
            if e.parent_span_id in run.interrupted:
                run.interrupted[e.parent_span_id].events.append(e)
            elif e.parent_span_id == root_id or e.parent_span_id is None:
                self._root_event(run, e)

    def _finish(self, run: _Run, e: EventRecord) -> None:
        end = e.end if e.end is not None else e.start
        a = e.attributes
        for span_id in list(run.steps):
            step = run.steps.pop(span_id)
            step.span.set_status(Status(StatusCode.ERROR, "interrupted"))
            step.span.set_attribute("error.type", "interrupted")
            step.span.end(end_time=_ns(end))
        for span_id, left in list(run.interrupted.items()):
            # Started by a previous owner and never executed again: shown as interrupted.
            del run.interrupted[span_id]
            span = self._start_step_span(run, left.started, left.started.start)
            for child in left.events:
                self._span_event(span, child)
            span.set_status(Status(StatusCode.ERROR, "interrupted"))
            span.set_attribute("error.type", "interrupted")
            span.end(end_time=_ns(end))
        root = run.root
        assert root is not None
        status = str(a.get("run.status", "failed" if e.status == "error" else "succeeded"))
        root.set_attribute("orchestrion.run.status", status)
        for key in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            if a.get(key) is not None:
                root.set_attribute(key, int(a[key]))
        if a.get("error.type"):
            root.set_attribute("error.type", str(a["error.type"]))
        if self.capture and a.get("answer"):
            root.set_attribute(
                "gen_ai.output.messages", attrs.text_messages("assistant", str(a["answer"]))
            )
        if e.status == "error":
            root.set_status(Status(StatusCode.ERROR, str(a.get("error.type") or status)))
        else:
            root.set_status(Status(StatusCode.OK))
        root.end(end_time=_ns(end))
        del self._runs[run.run_id]
        if self.metrics is not None:
            self.metrics.runs.add(
                1,
                {
                    "orchestrion.run.status": status,
                    "gen_ai.agent.name": str(run.common.get("gen_ai.agent.name", "")),
                },
            )

    # ---- events ---------------------------------------------------------------------------

    def _handle(self, run: _Run, e: EventRecord) -> None:
        kind = e.type
        if kind == "step.started":
            self._open_step(run, e)
        elif kind == "step.finished":
            self._close_step(run, e)
        elif kind == "run.finished":
            self._finish(run, e)
        elif kind == "run.started":
            if self.metrics is not None and run.record is not None:
                self.metrics.claim_latency.record(
                    max(0.0, e.start - run.record.created_at), _agent_only(run)
                )
        elif e.parent_span_id in run.steps:
            self._step_event(run, run.steps[e.parent_span_id], e)
        elif (
            e.parent_span_id
            and e.parent_span_id != run_span_id(run.run_id)
            and e.parent_span_id not in run.closed
        ):
            run.early.setdefault(e.parent_span_id, []).append(e)  # its step is not open yet
        else:
            self._root_event(run, e)

    def _root_event(self, run: _Run, e: EventRecord) -> None:
        if e.type in ("text.delta", "text.reset"):
            return
        root = run.root
        assert root is not None
        if e.type == "run.resumed":
            root.add_event(
                "resumed",
                attrs.event_attributes(e.type, e.attributes, capture=self.capture),
                timestamp=_ns(e.start),
            )
            if self.metrics is not None and run.ready:
                self.metrics.lease_takeovers.add(1, _agent_only(run))
            return
        self._span_event(root, e)

    def _span_event(self, span: Span, e: EventRecord) -> None:
        attributes = attrs.event_attributes(e.type, e.attributes, capture=self.capture)
        if e.status:
            attributes["orchestrion.status"] = e.status
        span.add_event(e.type, attributes, timestamp=_ns(e.start))

    def _step_event(self, run: _Run, step: _Step, e: EventRecord) -> None:
        kind = e.type
        if kind == "text.delta":
            if step.first_chunk is None:
                step.first_chunk = max(0.0, e.start - step.attempt_start)
            return
        if kind == "text.reset":
            return
        if kind == "model.response":
            step.response = dict(e.attributes)
            step.span.set_attributes(attrs.response_attributes(e.attributes))
            if self.capture:
                messages = attrs.output_messages(e.attributes)
                step.span.set_attribute("gen_ai.output.messages", messages)
            return
        if kind == "tool.result":
            step.tool_error = bool(e.attributes.get("is_error"))
            if self.capture and e.attributes.get("result") is not None:
                step.span.set_attribute("gen_ai.tool.call.result", str(e.attributes["result"]))
            return
        if kind == "retry.wait" and self.metrics is not None:
            self.metrics.retries.add(
                1,
                {
                    "orchestrion.pipeline": str(e.attributes.get("pipeline", "")),
                    "orchestrion.retry.reason": str(e.attributes.get("reason", "")),
                },
            )
        self._span_event(step.span, e)

    # ---- step spans -------------------------------------------------------------------------

    def _start_step_span(self, run: _Run, e: EventRecord, start: float) -> Span:
        a = e.attributes
        operation = str(a.get("gen_ai.operation.name", ""))
        attributes: dict[str, AttributeValue] = {**run.common}
        if operation:
            attributes["gen_ai.operation.name"] = operation
        name, kind = e.name, SpanKind.INTERNAL
        if operation == "chat":
            dependency = str(a.get("gen_ai.request.model", ""))
            model = attrs.agent_models(run.agent).get(dependency)
            info = attrs.model_info(model, dependency)
            attributes.update(info.attributes())
            attributes["orchestrion.model"] = dependency
            name, kind = f"chat {info.model}", SpanKind.CLIENT
        elif operation == "execute_tool":
            tool_name = str(a.get("gen_ai.tool.name", ""))
            attributes["gen_ai.tool.name"] = tool_name
            attributes["gen_ai.tool.type"] = "function"
            if a.get("gen_ai.tool.call.id"):
                attributes["gen_ai.tool.call.id"] = str(a["gen_ai.tool.call.id"])
            tool = run.agent.registry.get(tool_name) if run.agent is not None else None
            if tool is not None and tool.description:
                attributes["gen_ai.tool.description"] = tool.description
            if self.capture and a.get("arguments") is not None:
                attributes["gen_ai.tool.call.arguments"] = str(a["arguments"])
        attributes.update(attrs.step_extras(a))
        parent = run.steps.get(e.parent_span_id or "")
        context = (
            trace_api.set_span_in_context(parent.span) if parent is not None else run.root_context
        )
        with using_ids(e.span_id):
            return self.tracer.start_span(
                name, context=context, kind=kind, attributes=attributes, start_time=_ns(start)
            )

    def _open_step(self, run: _Run, e: EventRecord) -> _Step:
        interrupted = run.interrupted.pop(e.span_id, None)
        start = interrupted.started.start if interrupted is not None else e.start
        span = self._start_step_span(run, e, start)
        if interrupted is not None:
            for child in interrupted.events:
                self._span_event(span, child)
            for restart in interrupted.restarts:
                span.add_event("resumed", timestamp=_ns(restart))
            span.add_event(
                "resumed",
                {"orchestrion.first_start": interrupted.started.start},
                timestamp=_ns(e.start),
            )
        operation = str(e.attributes.get("gen_ai.operation.name", ""))
        model = None
        if operation == "chat":
            dependency = str(e.attributes.get("gen_ai.request.model", ""))
            model = attrs.model_info(attrs.agent_models(run.agent).get(dependency), dependency)
        step = _Step(span, operation, attempt_start=e.start, model=model)
        run.steps[e.span_id] = step
        for early in run.early.pop(e.span_id, []):
            self._step_event(run, step, early)
        return step

    def _close_step(self, run: _Run, e: EventRecord) -> None:
        step = run.steps.get(e.span_id) or self._open_step(run, e)
        del run.steps[e.span_id]
        run.closed.add(e.span_id)
        span = step.span
        end = e.end if e.end is not None else e.start
        error_type = e.attributes.get("error.type")
        if step.kind == "execute_tool" and step.tool_error and not error_type:
            error_type = "_OTHER"  # the tool failed; the model was told, the run goes on
        if step.first_chunk is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", step.first_chunk)
        if error_type:
            span.set_attribute("error.type", str(error_type))
            span.set_status(Status(StatusCode.ERROR, str(error_type)))
        span.end(end_time=_ns(end))
        if self.metrics is None or step.kind not in ("chat", "execute_tool"):
            return
        metric_attributes: dict[str, AttributeValue] = {"gen_ai.operation.name": step.kind}
        if step.model is not None:
            metric_attributes.update(step.model.attributes())
            if step.response.get("gen_ai.response.model"):
                metric_attributes["gen_ai.response.model"] = str(
                    step.response["gen_ai.response.model"]
                )
        else:
            metric_attributes["gen_ai.tool.name"] = str(e.attributes.get("gen_ai.tool.name", ""))
        if error_type:
            metric_attributes["error.type"] = str(error_type)
        self.metrics.operation(
            metric_attributes,
            duration=max(0.0, end - step.attempt_start),
            tokens=attrs.usage(step.response) if step.kind == "chat" else {},
            first_chunk=step.first_chunk,
        )


def _agent_of(event: EventRecord | None) -> str | None:
    if event is None:
        return None
    agent = event.attributes.get("gen_ai.agent.name") or event.attributes.get("agent")
    return str(agent) if agent else None


def _agent_only(run: _Run) -> dict[str, AttributeValue]:
    return {"gen_ai.agent.name": str(run.common.get("gen_ai.agent.name", ""))}


def _traceparent(prior: list[EventRecord]) -> TraceParent | None:
    for e in prior:
        if e.type == "run.queued":
            return parse_traceparent(e.attributes.get("traceparent"))
    return None


def _earliest(*batches: list[EventRecord]) -> float:
    starts = [e.start for batch in batches for e in batch if e.type != "run.queued"]
    return min(starts) if starts else time.time()
