"""The chaos LLM server: an ASGI app speaking OpenAI Chat Completions and Anthropic
Messages, answering from a script and injecting the faults its plan selects.

Routes:
    POST /v1/chat/completions  (also /chat/completions)   OpenAI-compatible
    POST /v1/messages          (also /messages)           Anthropic Messages
    GET  /v1/models                                       a one-model list
    GET  /chaos/log            what was injected, per call (?fault=KIND to filter)
    POST /chaos/reset          clear the log and call counter (same plan, same seed)
    GET  /chaos/plan, PUT /chaos/plan   read or replace the plan (replacing also resets)
    GET  /health
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrion.chaos.plan import (
    MALFORMED_VARIANTS,
    FaultPlan,
    FaultRule,
    choose,
    describe_plan_error,
    draw,
    parse_fault_header,
)
from orchestrion.chaos.wire import Answer, AnswerCall, AnthropicWire, OpenAIWire, Wire
from orchestrion.models.messages import ModelRequest
from orchestrion.models.scripted import ScriptedModel
from orchestrion.models.scripts import load_script, sample_arguments

LOG_LIMIT = 10_000
_HTTP_FAULTS = {
    "rate_limit": (429, "Rate limit reached (injected by orchestrion chaos)."),
    "server_error": (500, "The server had an error processing your request (injected)."),
    "unavailable": (503, "Service unavailable (injected)."),
    "overloaded": (529, "Overloaded (injected)."),
}


class ChaosState:
    """The server's mutable state: plan, call counter, per-rule counts and the log."""

    def __init__(self, plan: FaultPlan) -> None:
        self.set_plan(plan)

    def set_plan(self, plan: FaultPlan) -> None:
        self.plan = plan
        script = plan.replies if plan.replies else load_script(plan.script)
        self.model = ScriptedModel(script, name="chaos")
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.injected: dict[int, int] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_LIMIT)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def prompt_tokens(request: ModelRequest) -> int:
    """The input tokens the server counts for a request (and reports in its usage)."""
    return max(1, sum(len(m.content or "") for m in request.messages) // 4)


def context_length_message(wire: Wire, window: int, tokens: int) -> tuple[str, str | None]:
    """The provider's own words (and error code) for a prompt over the context window."""
    if isinstance(wire, OpenAIWire):
        return (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {tokens} tokens. Please reduce the length of the messages.",
            "context_length_exceeded",
        )
    return f"prompt is too long: {tokens} tokens > {window} maximum", None


def _format_seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def corrupt_arguments(arguments: str, variant: str) -> str:
    """Tool-call arguments broken the ways models break them."""
    if variant == "trailing_comma":
        body = arguments.rstrip()
        return body[:-1] + ",}" if body.endswith("}") else body + ","
    if variant == "single_quotes":
        return arguments.replace('"', "'")
    if variant == "code_fence":
        return f"```json\n{arguments}\n```"
    if variant == "double_encoded":
        return json.dumps(arguments)
    if variant == "truncated":
        return arguments[: max(1, len(arguments) // 2)]
    raise ValueError(f"unknown malformed_tool_args variant {variant!r}")


def build_answer(
    state: ChaosState,
    request: ModelRequest,
    model: str,
    call_number: int,
    rule: FaultRule | None,
    id_prefix: str,
) -> tuple[Answer, dict[str, Any]]:
    """The scripted answer, with any content fault applied. Returns (answer, detail)."""
    reply = state.model.reply_for(request)
    detail: dict[str, Any] = {}
    calls = [
        AnswerCall(id=f"{id_prefix}{call_number}_{i}", name=c.name, arguments=c.arguments)
        for i, c in enumerate(reply.calls)
    ]
    text = reply.text or ""
    finish = reply.finish_reason or ("tool_calls" if calls else "stop")
    kind = rule.fault if rule else None

    if kind in ("malformed_tool_args", "invented_tool") and not calls and request.tools:
        tool = request.tools[0]
        calls = [
            AnswerCall(
                id=f"{id_prefix}{call_number}_0",
                name=tool.name,
                arguments=json.dumps(sample_arguments(tool)),
            )
        ]
        finish = "tool_calls"
    if kind == "malformed_tool_args" and rule is not None:
        if calls:
            variant = rule.variant or draw(state.plan.seed, call_number).choice(MALFORMED_VARIANTS)
            for c in calls:
                c.arguments = corrupt_arguments(c.arguments, variant)
            detail["variant"] = variant
        else:
            detail["skipped"] = "the request offered no tools"
    elif kind == "invented_tool" and rule is not None:
        if calls:
            offered = {t.name for t in request.tools}
            name = rule.tool_name
            while name in offered:
                name += "_v2"
            for c in calls:
                c.name = name
            detail["tool_name"] = name
        else:
            detail["skipped"] = "the request offered no tools"

    output = text + "".join(c.arguments for c in calls)
    # A max_tokens in the request is honoured like a provider would: cut, finish=length.
    limit = request.max_tokens * 4 if request.max_tokens else None
    if kind == "max_tokens":
        limit = max(1, len(output) // 2) if limit is None else min(limit, len(output) // 2)
    if limit is not None and len(output) > limit:
        text, calls = _cut(text, calls, limit)
        finish = "length"
        detail["cut_at_chars"] = limit
    answer = Answer(
        model=model,
        text=text,
        calls=calls,
        finish=finish,
        input_tokens=prompt_tokens(request),
        output_tokens=_tokens(text + "".join(c.arguments for c in calls)),
    )
    return answer, detail


def _cut(text: str, calls: list[AnswerCall], limit: int) -> tuple[str, list[AnswerCall]]:
    if len(text) >= limit:
        return text[:limit], []
    budget = limit - len(text)
    kept: list[AnswerCall] = []
    for c in calls:
        if budget <= 0:
            break
        kept.append(AnswerCall(c.id, c.name, c.arguments[:budget]))
        budget -= len(c.arguments)
    return text, kept


def _reset_connection(request: Request) -> bool:
    """Abort the TCP connection with an RST, under the ASGI layer. uvicorn's receive is
    a bound method of its per-request cycle, which holds the asyncio transport."""
    cycle = getattr(request.receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # linger on, timeout 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


async def _wait_for_disconnect(request: Request, limit: float = 3600.0) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit):
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    return


def _retry_after_headers(rule: FaultRule) -> dict[str, str]:
    fmt, value = rule.retry_after_format, rule.retry_after
    headers: dict[str, str] = {}
    if fmt in ("seconds", "both"):
        headers["retry-after"] = _format_seconds(value)
    if fmt in ("ms", "both"):
        headers["retry-after-ms"] = str(int(value * 1000))
    if fmt == "date":
        when = time.time() + math.ceil(value)
        headers["retry-after"] = email.utils.formatdate(when, usegmt=True)
    return headers


def _rate_limit_headers(wire: Wire, rule: FaultRule) -> dict[str, str]:
    if isinstance(wire, OpenAIWire):
        return {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{_format_seconds(rule.retry_after)}s",
        }
    reset = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + math.ceil(rule.retry_after))
    )
    return {
        "anthropic-ratelimit-requests-limit": "60",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
    }


class ChaosApp:
    """Builds the Starlette app around a ChaosState."""

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        on_call: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.state = ChaosState(plan or FaultPlan())
        # Called with each log entry once its response is decided (the CLI's --verbose).
        self.on_call = on_call
        self.openai = OpenAIWire()
        self.anthropic = AnthropicWire()
        routes = [
            Route("/v1/chat/completions", self._openai, methods=["POST"]),
            Route("/chat/completions", self._openai, methods=["POST"]),
            Route("/v1/messages", self._anthropic, methods=["POST"]),
            Route("/messages", self._anthropic, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/chaos/log", self._log, methods=["GET"]),
            Route("/chaos/log", self._reset, methods=["DELETE"]),
            Route("/chaos/reset", self._reset, methods=["POST"]),
            Route("/chaos/plan", self._get_plan, methods=["GET"]),
            Route("/chaos/plan", self._put_plan, methods=["PUT"]),
            Route("/health", self._health, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    # ---- control routes ----------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "calls": self.state.calls})

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "chaos", "object": "model", "owned_by": "orchestrion"}],
            }
        )

    async def _log(self, request: Request) -> Response:
        entries = list(self.state.log)
        wanted = request.query_params.get("fault")
        if wanted:
            entries = [e for e in entries if e["fault"] == wanted]
        counts: dict[str, int] = {}
        for e in self.state.log:
            key = e["fault"] or "none"
            counts[key] = counts.get(key, 0) + 1
        return JSONResponse({"calls": self.state.calls, "counts": counts, "entries": entries})

    async def _reset(self, request: Request) -> Response:
        self.state.reset()
        return JSONResponse({"ok": True})

    async def _get_plan(self, request: Request) -> Response:
        return JSONResponse(self.state.plan.model_dump(mode="json"))

    async def _put_plan(self, request: Request) -> Response:
        try:
            plan = FaultPlan.model_validate_json(await request.body())
            self.state.set_plan(plan)
        except ValidationError as exc:
            return JSONResponse({"error": f"invalid plan: {describe_plan_error(exc)}"}, 400)
        except ValueError as exc:
            return JSONResponse({"error": f"invalid plan: {exc}"}, status_code=400)
        return JSONResponse({"ok": True})

    # ---- model routes ------------------------------------------------------------------

    async def _openai(self, request: Request) -> Response:
        return await self._handle(request, self.openai, "call_")

    async def _anthropic(self, request: Request) -> Response:
        return await self._handle(request, self.anthropic, "toolu_")

    async def _handle(self, request: Request, wire: Wire, id_prefix: str) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            parsed = wire.parse(body)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            return JSONResponse(wire.error_body(400, f"invalid request: {exc}"), status_code=400)
        streaming = bool(body.get("stream"))
        model = str(body.get("model") or "chaos")

        state = self.state
        rule: FaultRule | None = None
        source: str | None = None
        header = request.headers.get("x-chaos-fault")
        if header is not None:
            try:
                rule = parse_fault_header(header)
            except (ValueError, ValidationError) as exc:
                return JSONResponse(
                    wire.error_body(400, f"bad x-chaos-fault header: {exc}"), status_code=400
                )
            source = "header"
        # refused requests above are not model calls: count from here
        state.calls += 1
        n = state.calls
        if header is None:
            chosen = choose(
                state.plan,
                n,
                protocol=wire.name,
                streaming=streaming,
                injected=state.injected,
            )
            if chosen is not None:
                index, rule = chosen
                state.injected[index] = state.injected.get(index, 0) + 1
                source = "plan"
        entry: dict[str, Any] = {
            "call": n,
            "time": time.time(),
            "protocol": wire.name,
            "path": request.url.path,
            "model": model,
            "stream": streaming,
            "fault": rule.fault if rule else None,
            "source": source,
            "detail": {},
            "status": None,
        }
        state.log.append(entry)
        request_id = f"req_chaos{n:06d}"
        headers = {"x-request-id": request_id, "request-id": request_id}
        response = await self._respond(
            request, wire, body, parsed, model, n, rule, headers, entry, id_prefix, streaming
        )
        entry["status"] = None if response is None else response.status_code
        if self.on_call is not None:
            self.on_call(entry)
        return response if response is not None else Response(status_code=499)

    async def _respond(
        self,
        request: Request,
        wire: Wire,
        body: dict[str, Any],
        parsed: ModelRequest,
        model: str,
        n: int,
        rule: FaultRule | None,
        headers: dict[str, str],
        entry: dict[str, Any],
        id_prefix: str,
        streaming: bool,
    ) -> Response | None:
        kind = rule.fault if rule else None
        plan = self.state.plan
        if rule is not None and kind == "latency":
            entry["detail"]["delay"] = rule.delay
            await asyncio.sleep(rule.delay)
        if kind == "hang":
            await _wait_for_disconnect(request)
            return None
        if kind == "connection_reset":
            if _reset_connection(request):
                await asyncio.sleep(0)  # let the transport notice before we return
                return None
            raise RuntimeError("connection_reset: no transport to abort")  # uvicorn closes
        if rule is not None and kind in _HTTP_FAULTS:
            status, message = _HTTP_FAULTS[kind]
            if kind == "rate_limit":
                headers.update(_retry_after_headers(rule))
                headers.update(_rate_limit_headers(wire, rule))
                entry["detail"]["retry_after"] = rule.retry_after
                entry["detail"]["retry_after_format"] = rule.retry_after_format
            return JSONResponse(
                wire.error_body(status, message, rule.error_type),
                status_code=status,
                headers=headers,
            )
        window, tokens = plan.context_window, prompt_tokens(parsed)
        if kind == "context_length" or (window is not None and tokens > window):
            if kind == "context_length":  # injected: the classic numbers
                window, tokens = (8192, 9001) if isinstance(wire, OpenAIWire) else (200000, 210000)
            else:
                entry["detail"].update(context_window=window, prompt_tokens=tokens)
            assert window is not None
            message, code = context_length_message(wire, window, tokens)
            return JSONResponse(
                wire.error_body(400, message, None, code), status_code=400, headers=headers
            )
        media = "text/event-stream" if streaming else "application/json"
        if kind == "empty_body":
            return Response(b"", status_code=200, media_type=media, headers=headers)
        if not streaming and kind == "malformed_json":
            return Response(
                wire.malformed_body(n), status_code=200, media_type=media, headers=headers
            )
        if not streaming and kind == "midstream_error" and rule is not None:
            status = 529 if isinstance(wire, AnthropicWire) else 500
            return JSONResponse(
                wire.error_body(status, "Overloaded (injected)", rule.error_type),
                status_code=status,
                headers=headers,
            )

        answer, detail = build_answer(self.state, parsed, model, n, rule, id_prefix)
        entry["detail"].update(detail)
        entry["finish"] = answer.finish
        if not streaming:
            data = json.dumps(wire.render_json(answer, n)).encode()
            if kind == "truncated_stream":
                data = data[: len(data) // 2]
            if kind == "stall":
                return StreamingResponse(
                    self._stall_body(request, data[: len(data) // 2]),
                    media_type=media,
                    headers={**headers, "content-length": str(len(data))},
                )
            return Response(data, media_type=media, headers=headers)

        frames = wire.render_frames(
            answer, n, chunk_size=plan.chunk_size, include_usage=wire.wants_usage(body)
        )
        return StreamingResponse(
            self._stream(request, wire, frames.frames, frames.finish_index, n, rule),
            media_type=media,
            headers={**headers, "cache-control": "no-cache"},
        )

    async def _stall_body(self, request: Request, first: bytes) -> AsyncIterator[bytes]:
        yield first
        await _wait_for_disconnect(request)

    async def _stream(
        self,
        request: Request,
        wire: Wire,
        frames: list[str],
        finish_index: int,
        n: int,
        rule: FaultRule | None,
    ) -> AsyncIterator[str]:
        kind = rule.fault if rule else None
        cut = len(frames)
        if rule is not None and kind in (
            "truncated_stream",
            "midstream_error",
            "stall",
            "malformed_json",
        ):
            # never past the finishing frame: the fault must break the answer
            cut = min(rule.after_chunks, finish_index)
        delay = self.state.plan.chunk_delay
        for frame in frames[:cut]:
            yield frame
            if delay:
                await asyncio.sleep(delay)
        if kind == "midstream_error" and rule is not None:
            yield wire.error_frame("Overloaded (injected mid-stream)", rule.error_type)
        elif kind == "malformed_json":
            yield wire.malformed_frame(n)
        elif kind == "stall":
            await _wait_for_disconnect(request)


def create_app(plan: FaultPlan | None = None) -> Starlette:
    """The chaos server as an ASGI app (mount it, or run it with uvicorn)."""
    return ChaosApp(plan).app
