"""The OpenAPI 3.1 document of the service, built from the pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orchestrion.observe.public import EVENT_CLASSES
from orchestrion.server.listings import RUN_STATUSES
from orchestrion.server.schemas import (
    BreakerList,
    ConversationDetail,
    ConversationOut,
    CreateConversation,
    ErrorBody,
    EventPage,
    Health,
    PostMessage,
    RunList,
    RunOut,
    RunTraceOut,
    TraceOut,
    WhoAmI,
)

_MODELS: list[type[BaseModel]] = [
    CreateConversation,
    PostMessage,
    ErrorBody,
    ConversationOut,
    ConversationDetail,
    RunOut,
    EventPage,
    TraceOut,
    RunTraceOut,
    Health,
    RunList,
    BreakerList,
    WhoAmI,
]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ErrorBody, description)


_SSE_DESCRIPTION = (
    "Server-Sent Events: one frame per durable event (`id: <seq>`, "
    "`event: <type>`, `data: <Event JSON>`: one of the typed events, whose `type` is the "
    "frame's event name), keep-alive comments while waiting; the stream ends after "
    "`run.finished`. An event type without a schema of its own is an OtherEvent: read "
    "its `attributes`."
)
_SSE_CONTENT: dict[str, Any] = {"text/event-stream": {"schema": {"type": "string"}}}
_SSE: dict[str, Any] = {
    "description": _SSE_DESCRIPTION,
    "content": _SSE_CONTENT,
}

_AUTH_ERRORS = {
    "401": _error("No API key, or a wrong one."),
}


def _id_param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"The {what}'s id. Another tenant's id answers 404 like an unknown id.",
    }


def _limit_param(default: int, maximum: int, what: str) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        "description": f"{what} per page (422 beyond {maximum}).",
    }


def _cursor_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def openapi_document(limits: Any) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization") for m in (*_MODELS, *EVENT_CLASSES)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = defs.get("$defs", {})
    # The `data` of an SSE frame, and an item of an events page.
    schemas["Event"] = {"anyOf": [_ref(c) for c in EVENT_CLASSES]}
    run_id = _id_param("run_id", "run")
    conversation_id = _id_param("conversation_id", "conversation")
    bad_body = {
        "400": _error("The body is not JSON."),
        "413": _error(f"The body is larger than {limits.max_body_bytes} bytes."),
        "422": _error(
            "The body is JSON but not valid: a wrong type, an unknown field, a missing "
            f"field, or a message longer than {limits.max_message_chars} characters."
        ),
    }
    after_params = [
        {
            "name": "after",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0},
            "description": "Only events with a greater seq.",
        },
        {
            "name": "Last-Event-ID",
            "in": "header",
            "schema": {"type": "integer", "minimum": 0},
            "description": "A reconnecting SSE client's last seq (wins over `after`).",
        },
    ]
    index = {"type": "integer", "minimum": 0}
    history_params = [
        _limit_param(limits.page_messages, limits.max_page_messages, "History messages"),
        _cursor_param(
            "before",
            "Page back: the newest messages whose index is lower (default: the newest).",
            index,
        ),
        _cursor_param("after", "Page forward: the oldest messages whose index is greater.", index),
    ]
    run_cursor = {"type": "string"}
    conversation_trace_params = [
        _limit_param(limits.page_runs, limits.max_page_runs, "Runs"),
        _cursor_param("before", "Page back: the newest runs older than this run (id).", run_cursor),
        _cursor_param(
            "after", "Page forward: the oldest runs newer than this run (id).", run_cursor
        ),
    ]
    run_trace_params = [
        _limit_param(limits.max_page_events, limits.max_page_events, "Events"),
        _cursor_param("after", "Only events with a greater seq.", index),
    ]
    paging_error = _error("A paging parameter (limit, before, after) is not valid.")
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness (no authentication).",
                "security": [],
                "responses": {"200": _json(Health, "The process answers.")},
            }
        },
        "/ready": {
            "get": {
                "summary": "Readiness: the store answers (no authentication).",
                "security": [],
                "responses": {
                    "200": _json(Health, "Ready."),
                    "503": _error("The store does not answer."),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document (no authentication).",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/v1/conversations": {
            "post": {
                "summary": "Start a conversation (its id is generated).",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref(CreateConversation)}},
                },
                "responses": {
                    "201": _json(ConversationOut, "Created."),
                    **_AUTH_ERRORS,
                    **bad_body,
                },
            }
        },
        "/v1/conversations/{conversation_id}": {
            "get": {
                "summary": "A conversation: state, version, a page of its history, recent runs.",
                "parameters": [conversation_id, *history_params],
                "responses": {
                    "200": _json(ConversationDetail, "The conversation."),
                    **_AUTH_ERRORS,
                    "404": _error("No such conversation."),
                    "422": paging_error,
                },
            }
        },
        "/v1/conversations/{conversation_id}/messages": {
            "post": {
                "summary": "Post a user message: a turn, streamed (SSE) or fire-and-forget.",
                "parameters": [conversation_id],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(PostMessage)}},
                },
                "responses": {
                    "200": _SSE,
                    "202": _json(RunOut, "stream=false: the queued run."),
                    **_AUTH_ERRORS,
                    "404": _error("No such conversation."),
                    "409": _error(
                        "conversation_busy: busy_policy reject and the conversation has an "
                        "active turn; conversation_closed / conversation_expired: the "
                        "conversation takes no more turns."
                    ),
                    **bad_body,
                },
            }
        },
        "/v1/conversations/{conversation_id}/close": {
            "post": {
                "summary": "Close a conversation: it takes no more turns; its history stays "
                "readable until it expires. Closing a closed conversation changes nothing.",
                "parameters": [conversation_id],
                "responses": {
                    "200": _json(ConversationOut, "The conversation, state CLOSED."),
                    **_AUTH_ERRORS,
                    "404": _error("No such conversation."),
                    "409": _error(
                        "conversation_busy: a turn is queued or running (cancel it, or wait "
                        "for it to end, then close)."
                    ),
                },
            }
        },
        "/v1/conversations/{conversation_id}/trace": {
            "get": {
                "summary": "The span trees of a page of a conversation's runs (default: the "
                f"newest {limits.page_runs}; a page also ends after the run that brings it to "
                f"{limits.max_trace_events} events).",
                "parameters": [conversation_id, *conversation_trace_params],
                "responses": {
                    "200": _json(TraceOut, "A page of the trace."),
                    **_AUTH_ERRORS,
                    "404": _error("No such conversation."),
                    "422": _error(
                        "A paging parameter is not valid (a cursor must be a run of this "
                        "conversation)."
                    ),
                },
            }
        },
        "/v1/runs/{run_id}": {
            "get": {
                "summary": "A run: status, answer, error.",
                "parameters": [run_id],
                "responses": {
                    "200": _json(RunOut, "The run."),
                    **_AUTH_ERRORS,
                    "404": _error("No such run."),
                },
            }
        },
        "/v1/runs/{run_id}/events": {
            "get": {
                "summary": "A run's events after a seq: SSE until the run ends, or a JSON page.",
                "parameters": [
                    run_id,
                    *after_params,
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"enum": ["sse", "json"], "default": "sse"},
                    },
                    _limit_param(
                        limits.max_page_events, limits.max_page_events, "With format=json: events"
                    ),
                ],
                "responses": {
                    "200": {
                        "description": _SSE_DESCRIPTION + " With format=json: a page of "
                        f"at most {limits.max_page_events} events.",
                        "content": {
                            **_SSE_CONTENT,
                            "application/json": {"schema": _ref(EventPage)},
                        },
                    },
                    **_AUTH_ERRORS,
                    "404": _error("No such run."),
                    "422": _error("after / Last-Event-ID / format / limit is not valid."),
                },
            }
        },
        "/v1/runs/{run_id}/cancel": {
            "post": {
                "summary": "Cancel a run (202); a finished run answers 200 unchanged.",
                "parameters": [run_id],
                "responses": {
                    "200": _json(RunOut, "The run had already finished."),
                    "202": _json(RunOut, "Cancellation requested (a queued run is cancelled)."),
                    **_AUTH_ERRORS,
                    "404": _error("No such run."),
                },
            }
        },
        "/v1/runs/{run_id}/trace": {
            "get": {
                "summary": "The span tree of a page of a run's events (default and maximum: "
                f"{limits.max_page_events} events).",
                "parameters": [run_id, *run_trace_params],
                "responses": {
                    "200": _json(RunTraceOut, "A page of the run's trace."),
                    **_AUTH_ERRORS,
                    "404": _error("No such run."),
                    "422": paging_error,
                },
            }
        },
    }
    paths.update(_listing_paths(limits, paging_error))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrion",
            "version": "1",
            "description": "Durable LLM conversations over HTTP: turns streamed as "
            "Server-Sent Events with Last-Event-ID resumption. See docs/server.md.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }


def _listing_paths(limits: Any, paging_error: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/runs, /v1/breakers, /v1/whoami (server/listings.py; the console's reads)."""
    text = {"type": "string"}
    runs_params = [
        _cursor_param(
            "status",
            "Only runs of this status, or of any of several (comma-separated): "
            + ", ".join(RUN_STATUSES)
            + ".",
            text,
        ),
        _cursor_param("agent", "Only runs of this agent.", text),
        _cursor_param(
            "conversation",
            "Only this conversation's runs (another tenant's conversation has none).",
            text,
        ),
        _cursor_param(
            "since",
            "Only runs created at or after this time (seconds since the epoch, UTC).",
            {"type": "number", "minimum": 0},
        ),
        _cursor_param(
            "before",
            "Page back: the runs older than this run (id); `next` gives it.",
            text,
        ),
        _limit_param(limits.page_run_list, limits.max_page_run_list, "Runs"),
    ]
    return {
        "/v1/runs": {
            "get": {
                "summary": "The runs the key may read, newest first, filtered and paged.",
                "parameters": runs_params,
                "responses": {
                    "200": _json(RunList, "A page of runs."),
                    **_AUTH_ERRORS,
                    "422": _error(
                        "A parameter is not valid (an unknown status, a limit out of range, "
                        "a cursor that is not one of the key's runs)."
                    ),
                },
            }
        },
        "/v1/breakers": {
            "get": {
                "summary": "The circuit breakers every worker of the store shares (any key "
                "may read them: they belong to the fleet, not to a tenant).",
                "responses": {"200": _json(BreakerList, "The breakers."), **_AUTH_ERRORS},
            }
        },
        "/v1/whoami": {
            "get": {
                "summary": "What the key may read: its tenant, this server's agents, the run "
                "statuses.",
                "responses": {"200": _json(WhoAmI, "The key's scope."), **_AUTH_ERRORS},
            }
        },
    }
