"""The HTTP API: conversations, turns streamed as Server-Sent Events, runs, traces.

    app = create_app(orx, keys={"<secret>": "tenant-a"}, limits=Limits())
    uvicorn.run(app)

Every `/v1` endpoint needs `Authorization: Bearer <key>`; the key decides the tenant, and
every conversation, run and trace of another tenant answers 404 with exactly the body an
unknown id gets. Turns are executed by the service (`Orchestrion.start`), never by the
HTTP request: a client that goes away leaves its turn running, and reattaches with
`Last-Event-ID` (or `?after=N`) to get every later event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestrion.engine.conversation import ConversationState
from orchestrion.errors import ConversationBusy, ConversationClosed, ConversationExpired, NotFound
from orchestrion.observe.events import new_id
from orchestrion.observe.public import public_event
from orchestrion.observe.trace import Span
from orchestrion.observe.traceparent import valid_traceparent
from orchestrion.reading import InvalidCursor
from orchestrion.runtime import ConversationInfo, Orchestrion
from orchestrion.server.auth import KeyRing
from orchestrion.server.console import console_routes
from orchestrion.server.listings import Listings, user_message
from orchestrion.server.openapi import openapi_document
from orchestrion.server.schemas import (
    ConversationDetail,
    ConversationOut,
    CreateConversation,
    PostMessage,
    RunOut,
)
from orchestrion.server.sse import SSE_HEADERS, SSE_MEDIA_TYPE, event_json, event_stream
from orchestrion.store.base import ConversationRecord, RunRecord

log = logging.getLogger("orchestrion.server")

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Limits:
    """What the service accepts. Every limit answers a 4xx that names it."""

    max_body_bytes: int = 64 * 1024  # 413 beyond this
    max_message_chars: int = 32_000  # 422 beyond this
    max_id_chars: int = 200  # longer ids cannot exist: 404
    # Paged reads (`?limit=` answers 422 beyond the maximum; the default when absent):
    max_page_events: int = 1000  # events per ?format=json page and per page of a run's trace
    page_messages: int = 100  # history messages per page of GET /v1/conversations/{id}
    max_page_messages: int = 1000
    page_runs: int = 20  # runs per page of a conversation's trace
    max_page_runs: int = 100
    page_run_list: int = 50  # runs per page of GET /v1/runs (the console's list)
    max_page_run_list: int = 200
    max_trace_events: int = 10_000  # a conversation trace page ends after the run reaching it
    keepalive_seconds: float = 15.0  # SSE comment while no event arrives
    ready_timeout_seconds: float = 5.0  # /ready: how long the store may take to answer
    # Slow clients (enforced by the server, see server/deadlines.py): a request's headers
    # must arrive within this long of the connection's start (or of the previous
    # response), its body within this long of its headers; else 408 and the connection
    # is closed.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.extra = extra

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"type": self.type, "message": self.message, **self.extra}
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


UNAUTHORIZED = ApiError(
    401, "unauthorized", "a valid API key is required: Authorization: Bearer <key>"
)
OPERATOR_CANNOT_WRITE = ApiError(
    403,
    "forbidden",
    "this key reads every tenant (the local console); starting conversations and turns "
    "needs a tenant's key",
)
# One body per kind of resource, whatever the reason (unknown id, another tenant's id).
RUN_NOT_FOUND = ApiError(404, "not_found", "no such run")
CONVERSATION_NOT_FOUND = ApiError(404, "not_found", "no such conversation")

_SEQ = re.compile(r"[0-9]{1,18}")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class Api:
    def __init__(
        self,
        orx: Orchestrion,
        keys: Mapping[str, str],
        limits: Limits,
        default_agent: str | None,
        operator_keys: Collection[str] = (),
    ) -> None:
        self.orx = orx
        self.keys = KeyRing(keys)
        # Keys that read every tenant (`orchestrion console`): reads and cancel only.
        self.operators = KeyRing({key: "*" for key in operator_keys})
        self.limits = limits
        self.default_agent = default_agent

    # ---- plumbing ---------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        authorization = request.headers.get("authorization")
        tenant = self.keys.tenant_for(authorization)
        if tenant is None:
            if self.operators.tenant_for(authorization) is not None:
                raise OPERATOR_CANNOT_WRITE
            raise UNAUTHORIZED
        return tenant

    def scope(self, request: Request) -> str | None:
        """The tenant whose data a request may read: its key's, or None (every tenant)
        for an operator key."""
        if self.operators.tenant_for(request.headers.get("authorization")) is not None:
            return None
        return self.tenant(request)

    def valid_id(self, value: str) -> bool:
        return 0 < len(value) <= self.limits.max_id_chars and value.isprintable()

    async def body(self, request: Request, model: type[M], *, optional: bool = False) -> M:
        limit = self.limits.max_body_bytes
        too_large = ApiError(
            413, "body_too_large", f"the request body exceeds {limit} bytes", limit=limit
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
        except ClientDisconnect:
            # Not an error of ours: nobody is left to answer (the response is dropped).
            log.info(
                "%s %s: the client went away before its body was complete (%d bytes read)",
                request.method,
                request.url.path,
                size,
            )
            raise ApiError(
                400, "client_disconnected", "the connection closed before the body was complete"
            ) from None
        raw = b"".join(chunks)
        if not raw.strip():
            if optional:
                return model()
            raise ApiError(400, "malformed_json", "the body is empty: expected a JSON object")
        try:
            data = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise ApiError(
                400, "malformed_json", f"the body is not valid JSON: {_short(str(exc), 200)}"
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            summary = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors
            )
            raise ApiError(
                422, "invalid_body", f"invalid request body: {summary}", errors=errors
            ) from None

    async def run_of(self, run_id: str, tenant: str | None) -> RunRecord:
        if not self.valid_id(run_id):
            raise RUN_NOT_FOUND
        try:
            return await self.orx.store.get_run(run_id, tenant=tenant)
        except NotFound:
            raise RUN_NOT_FOUND from None

    async def conversation_of(
        self, conversation_id: str, tenant: str | None
    ) -> ConversationRecord:
        if not self.valid_id(conversation_id):
            raise CONVERSATION_NOT_FOUND
        try:
            return await self.orx.store.get_conversation(conversation_id, tenant=tenant)
        except NotFound:
            raise CONVERSATION_NOT_FOUND from None

    def agent_name(self, name: str | None) -> str:
        chosen = name or self.default_agent
        if chosen is None:
            raise ApiError(
                422, "invalid_body", "agent is required: " + self._known_agents(), field="agent"
            )
        if chosen not in self.orx.agents:
            raise ApiError(
                422,
                "unknown_agent",
                f"unknown agent {_short(chosen)!r}; " + self._known_agents(),
                field="agent",
            )
        return chosen

    def _known_agents(self) -> str:
        return "known agents: " + (", ".join(sorted(self.orx.agents)) or "none")

    def run_json(self, run: RunRecord) -> dict[str, Any]:
        return RunOut(
            id=run.id,
            conversation_id=run.conversation_id,
            agent=run.agent,
            status=run.status,
            message=user_message(run),
            answer=str((run.result or {}).get("answer", "")),
            error=run.error,
            trace_id=run.trace_id,
            cancel_requested=run.cancel_requested,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            events_url=f"/v1/runs/{run.id}/events",
            trace_url=f"/v1/runs/{run.id}/trace",
        ).model_dump(mode="json")

    def after_seq(self, request: Request) -> int:
        """`Last-Event-ID` (a reconnecting client's) wins over `?after=`."""
        header = request.headers.get("last-event-id")
        if header is not None and header.strip():
            if not _SEQ.fullmatch(header.strip()):
                raise ApiError(
                    422,
                    "invalid_parameter",
                    "Last-Event-ID must be an event's seq (a non-negative integer)",
                    field="Last-Event-ID",
                )
            return int(header.strip())
        after = self.index_param(request, "after", "an event's seq")
        return 0 if after is None else after

    def index_param(self, request: Request, name: str, what: str) -> int | None:
        value = request.query_params.get(name)
        if value is None:
            return None
        if not _SEQ.fullmatch(value):
            raise ApiError(
                422,
                "invalid_parameter",
                f"{name} must be {what} (a non-negative integer)",
                field=name,
            )
        return int(value)

    def limit_param(self, request: Request, *, default: int, maximum: int) -> int:
        value = request.query_params.get("limit")
        if value is None:
            return default
        if not _SEQ.fullmatch(value) or not 1 <= int(value) <= maximum:
            raise ApiError(
                422,
                "invalid_parameter",
                f"limit must be an integer from 1 to {maximum}",
                field="limit",
                limit=maximum,
            )
        return int(value)

    def run_param(self, request: Request, name: str) -> str | None:
        """A run id used as a page cursor (checked by the runtime: a run of this
        conversation, of this tenant)."""
        value = request.query_params.get(name)
        if value is not None and not self.valid_id(value):
            raise ApiError(422, "invalid_parameter", f"{name} must be the id of a run", field=name)
        return value

    # ---- endpoints --------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        try:
            await asyncio.wait_for(
                self.orx.store.list_runs(limit=1), self.limits.ready_timeout_seconds
            )
        except Exception as exc:
            log.warning("not ready: the store does not answer (%s)", exc.__class__.__name__)
            return ApiError(503, "not_ready", "the store does not answer").response()
        return JSONResponse({"status": "ready"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.limits))

    async def create_conversation(self, request: Request) -> Response:
        tenant = self.tenant(request)
        body = await self.body(request, CreateConversation, optional=True)
        agent = self.orx.agents[self.agent_name(body.agent)]
        record = await self.orx.store.ensure_conversation(
            new_id("conv"),
            tenant=tenant,
            agent=agent.name,
            ttl_seconds=agent.conversation_ttl,
            state=ConversationState.AWAITING_INPUT,
        )
        return JSONResponse(
            _conversation_json(await self.orx.conversation_info(record)),
            status_code=201,
            headers={"Location": f"/v1/conversations/{record.id}"},
        )

    async def get_conversation(self, request: Request) -> Response:
        tenant = self.scope(request)
        record = await self.conversation_of(request.path_params["conversation_id"], tenant)
        limits = self.limits
        limit = self.limit_param(
            request, default=limits.page_messages, maximum=limits.max_page_messages
        )
        before = self.index_param(request, "before", "a message's index")
        after = self.index_param(request, "after", "a message's index")
        try:
            page = await self.orx.history(
                record.id, tenant=tenant, limit=limit, before=before, after=after
            )
        except NotFound:  # purged meanwhile
            raise CONVERSATION_NOT_FOUND from None
        runs = await self.orx.store.list_runs(conversation_id=record.id, limit=20)
        info = await self.orx.conversation_info(record)
        start = page.start or 0
        next_url = _next_url(f"/v1/conversations/{quote(record.id, safe='')}", limit, page.next)

        def render() -> bytes:
            detail = ConversationDetail(
                **_conversation_json(info),
                history=[
                    {"index": start + i, **m.model_dump(mode="json")} for i, m in enumerate(page)
                ],
                next=next_url,
                runs=[
                    {
                        "id": r.id,
                        "status": r.status,
                        "created_at": r.created_at,
                        "finished_at": r.finished_at,
                    }
                    for r in runs
                ],
            )
            return _json(detail.model_dump(mode="json"))

        return await _render_off_loop(render)

    async def post_message(self, request: Request) -> Response:
        tenant = self.tenant(request)
        conversation_id = request.path_params["conversation_id"]
        if not self.valid_id(conversation_id):
            raise CONVERSATION_NOT_FOUND
        body = await self.body(request, PostMessage)
        self.check_message(body.message)
        conversation = await self.conversation_of(conversation_id, tenant)
        agent = self.agent_name(body.agent or conversation.agent)
        try:
            run = await self.orx.submit(
                agent,
                body.message,
                conversation=conversation.id,
                tenant=tenant,
                busy_policy=body.busy_policy,
                # W3C: a valid traceparent joins the caller's trace, an invalid one is ignored
                traceparent=valid_traceparent(request.headers.get("traceparent")),
            )
        except ConversationBusy:
            raise ApiError(
                409,
                "conversation_busy",
                "the conversation already has an active turn (busy_policy reject)",
            ) from None
        except ConversationClosed:
            raise ApiError(
                409,
                "conversation_closed",
                "the conversation is closed: it takes no more turns (its history stays "
                "readable); start a new conversation",
            ) from None
        except ConversationExpired:
            raise ApiError(
                409,
                "conversation_expired",
                "the conversation expired: it takes no more turns and will be purged; "
                "start a new conversation",
            ) from None
        except NotFound:  # the conversation was purged meanwhile
            raise CONVERSATION_NOT_FOUND from None
        self.orx.start(run.id)
        headers = {"Location": f"/v1/runs/{run.id}", "X-Run-Id": run.id}
        if not body.stream:
            return JSONResponse(self.run_json(run), status_code=202, headers=headers)
        return self.sse(run.id, tenant, after=0, extra_headers=headers)

    async def close_conversation(self, request: Request) -> Response:
        tenant = self.tenant(request)
        conversation_id = request.path_params["conversation_id"]
        if not self.valid_id(conversation_id):
            raise CONVERSATION_NOT_FOUND
        try:
            info = await self.orx.close_conversation(conversation_id, tenant=tenant)
        except NotFound:
            raise CONVERSATION_NOT_FOUND from None
        except ConversationBusy:
            raise ApiError(
                409,
                "conversation_busy",
                "the conversation has a turn in flight: cancel it (POST "
                "/v1/runs/{id}/cancel) or wait for it to end, then close the conversation",
            ) from None
        return JSONResponse(_conversation_json(info))

    def check_message(self, message: str) -> None:
        limit = self.limits.max_message_chars
        if len(message) > limit:
            raise ApiError(
                422,
                "message_too_long",
                f"message is {len(message)} characters; the limit is {limit}",
                limit=limit,
                field="message",
            )
        if not message.strip():
            raise ApiError(422, "invalid_body", "message is empty", field="message")
        if "\x00" in message:
            raise ApiError(422, "invalid_body", "message contains a NUL character", field="message")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                422,
                "invalid_body",
                "message contains an unpaired surrogate (not valid Unicode text)",
                field="message",
            ) from None

    def sse(
        self,
        run_id: str,
        tenant: str | None,
        *,
        after: int,
        extra_headers: Mapping[str, str] = {},
    ) -> StreamingResponse:
        return StreamingResponse(
            event_stream(
                self.orx,
                run_id,
                after_seq=after,
                tenant=tenant,
                keepalive_seconds=self.limits.keepalive_seconds,
            ),
            media_type=SSE_MEDIA_TYPE,
            headers={**SSE_HEADERS, **extra_headers},
        )

    async def get_run(self, request: Request) -> Response:
        tenant = self.scope(request)
        run = await self.run_of(request.path_params["run_id"], tenant)
        return JSONResponse(self.run_json(run))

    async def run_events(self, request: Request) -> Response:
        tenant = self.scope(request)
        run = await self.run_of(request.path_params["run_id"], tenant)
        after = self.after_seq(request)
        fmt = request.query_params.get("format", "sse")
        if fmt not in ("sse", "json"):
            raise ApiError(422, "invalid_parameter", "format must be sse or json", field="format")
        if fmt == "sse":
            return self.sse(run.id, tenant, after=after)
        size = self.limit_param(
            request, default=self.limits.max_page_events, maximum=self.limits.max_page_events
        )
        events = await self.orx.store.read_events(run.id, after_seq=after, limit=size + 1)
        page = events[:size]
        finished = any(e.type == "run.finished" for e in page) or (
            run.terminal and len(events) == len(page)
        )
        # The shape of EventPage, built directly: the events are typed already.
        return JSONResponse(
            {
                "run_id": run.id,
                "events": [event_json(public_event(e)) for e in page],
                "next_after": page[-1].seq if page else after,
                "finished": finished,
            }
        )

    async def cancel_run(self, request: Request) -> Response:
        tenant = self.scope(request)
        run = await self.run_of(request.path_params["run_id"], tenant)
        if run.terminal:
            return JSONResponse(self.run_json(run))  # nothing to cancel: 200 as it is
        try:
            run = await self.orx.cancel(run.id, tenant=tenant)
        except NotFound:
            raise RUN_NOT_FOUND from None
        return JSONResponse(self.run_json(run), status_code=202)

    async def run_trace(self, request: Request) -> Response:
        tenant = self.scope(request)
        run = await self.run_of(request.path_params["run_id"], tenant)
        size = self.limit_param(
            request, default=self.limits.max_page_events, maximum=self.limits.max_page_events
        )
        after = self.index_param(request, "after", "an event's seq") or 0
        try:
            page = await self.orx.run_trace(run.id, tenant=tenant, after=after, limit=size)
        except NotFound:
            raise RUN_NOT_FOUND from None
        next_url = _next_url(f"/v1/runs/{quote(run.id, safe='')}/trace", size, page.next)
        return await _render_off_loop(
            lambda: _json(
                {
                    "id": run.id,
                    "spans": [_span_tree(s) for s in page.spans],
                    "next": next_url,
                    "last_seq": page.last_seq,
                }
            )
        )

    async def conversation_trace(self, request: Request) -> Response:
        tenant = self.scope(request)
        record = await self.conversation_of(request.path_params["conversation_id"], tenant)
        limits = self.limits
        size = self.limit_param(request, default=limits.page_runs, maximum=limits.max_page_runs)
        try:
            page = await self.orx.conversation_trace(
                record.id,
                tenant=tenant,
                limit=size,
                before=self.run_param(request, "before"),
                after=self.run_param(request, "after"),
                max_events=limits.max_trace_events,
            )
        except InvalidCursor as exc:
            raise ApiError(422, "invalid_parameter", str(exc), field=exc.field) from None
        except NotFound:
            raise CONVERSATION_NOT_FOUND from None
        next_url = _next_url(
            f"/v1/conversations/{quote(record.id, safe='')}/trace", size, page.next
        )
        return await _render_off_loop(
            lambda: _json(
                {
                    "id": record.id,
                    "spans": [_span_tree(s) for s in page.spans],
                    "next": next_url,
                }
            )
        )


def _next_url(path: str, limit: int, cursor: Mapping[str, Any] | None) -> str | None:
    """The URL of the next page: the same limit, the page's cursor (None: no next page)."""
    if cursor is None:
        return None
    return f"{path}?{urlencode({'limit': limit, **cursor})}"


def _json(content: Any) -> bytes:
    # As JSONResponse renders it.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def _render_off_loop(render: Callable[[], bytes]) -> Response:
    """A JSON response whose body is built in a worker thread: a page of a trace or a
    history is thousands of objects to convert, and the loop has streams to feed."""
    return Response(await asyncio.to_thread(render), media_type="application/json")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _conversation_json(record: ConversationInfo) -> dict[str, Any]:
    return ConversationOut(
        id=record.id,
        agent=record.agent,
        state=record.state,
        version=record.version,
        message_count=record.message_count,
        created_at=record.created_at,
        updated_at=record.updated_at,
        expires_at=record.expires_at,
    ).model_dump(mode="json")


def _span_tree(span: Span) -> dict[str, Any]:
    node = span.to_json()
    node["children"] = [_span_tree(c) for c in span.children]
    return node


def _guard(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return exc.response(headers)

    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    message = {404: "no such endpoint", 405: f"{request.method} is not allowed here"}
    return ApiError(
        exc.status_code,
        kinds.get(exc.status_code, "http_error"),
        message.get(exc.status_code, str(exc.detail)),
    ).response(exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # The request line only: headers (the API key) are never logged.
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return ApiError(500, "internal", "internal error").response()


def create_app(
    orx: Orchestrion,
    *,
    keys: Mapping[str, str],
    limits: Limits | None = None,
    default_agent: str | None = None,
    manage_lifecycle: bool = True,
    console: bool = True,
    operator_keys: Collection[str] = (),
) -> Starlette:
    """The ASGI app. `keys` maps each API key to its tenant. `default_agent` answers in
    conversations created without one (default: the only agent, if there is one).
    With `manage_lifecycle`, the app opens `orx` on startup and closes it on shutdown
    (closing waits for the turns this process is executing). With `console`, the web
    console is served at /ui (docs/console.md). `operator_keys` read every tenant's runs
    and conversations (and may cancel runs) but start nothing: `orchestrion console`'s."""
    if not keys and not operator_keys:
        raise ValueError("at least one API key is required")
    if default_agent is None and len(orx.agents) == 1:
        default_agent = next(iter(orx.agents))
    if default_agent is not None and default_agent not in orx.agents:
        raise ValueError(f"default agent {default_agent!r} is not one of this process's agents")
    api = Api(orx, keys, limits or Limits(), default_agent, operator_keys)
    listings = Listings(api)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await orx.open()
        try:
            yield
        finally:
            if manage_lifecycle:
                await orx.close()

    def route(path: str, endpoint: Endpoint, method: str) -> Route:
        return Route(path, _guard(endpoint), methods=[method])

    routes = [
        route("/health", api.health, "GET"),
        route("/ready", api.ready, "GET"),
        route("/v1/openapi.json", api.openapi, "GET"),
        route("/v1/conversations", api.create_conversation, "POST"),
        route("/v1/conversations/{conversation_id}", api.get_conversation, "GET"),
        route("/v1/conversations/{conversation_id}/messages", api.post_message, "POST"),
        route("/v1/conversations/{conversation_id}/close", api.close_conversation, "POST"),
        route("/v1/conversations/{conversation_id}/trace", api.conversation_trace, "GET"),
        route("/v1/whoami", listings.whoami, "GET"),
        route("/v1/runs", listings.list_runs, "GET"),
        route("/v1/breakers", listings.list_breakers, "GET"),
        route("/v1/runs/{run_id}", api.get_run, "GET"),
        route("/v1/runs/{run_id}/events", api.run_events, "GET"),
        route("/v1/runs/{run_id}/cancel", api.cancel_run, "POST"),
        route("/v1/runs/{run_id}/trace", api.run_trace, "GET"),
        *(console_routes() if console else []),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.router.redirect_slashes = False  # one spelling per endpoint: no 307 detours
    app.state.api = api
    return app
