"""The lists the console reads (any client may): the runs a key may see, newest first,
filtered and paged; the circuit breakers; what a key may read.

    GET /v1/runs?status=failed,cancelled&agent=support&since=1717000000&limit=50
    GET /v1/runs?conversation=conv_...            (that conversation's runs)
    GET /v1/runs?before=run_...                   (the next page: what `next` says)
    GET /v1/breakers
    GET /v1/whoami
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from itertools import takewhile
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrion.errors import NotFound
from orchestrion.resilience.summary import breaker_summaries
from orchestrion.store.base import RunRecord, RunStatus

if TYPE_CHECKING:
    from orchestrion.server.app import Api

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)


def user_message(run: RunRecord) -> str:
    """The user's message that started a run ("" when the input holds none)."""
    message = run.input.get("message")
    content = message.get("content") if isinstance(message, Mapping) else message
    return content if isinstance(content, str) else ""


class Listings:
    """The endpoints, over the API's plumbing (keys, parameters, errors)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def whoami(self, request: Request) -> Response:
        tenant = self.api.scope(request)
        return JSONResponse(
            {
                "tenant": tenant,
                "all_tenants": tenant is None,
                "agents": sorted(self.api.orx.agents),
                "run_statuses": list(RUN_STATUSES),
            }
        )

    async def list_breakers(self, request: Request) -> Response:
        # Breakers guard the fleet's dependencies (model endpoints, tools), shared by every
        # tenant: any valid key may see them. They hold no conversation content.
        self.api.scope(request)
        now = time.time()
        rows = await breaker_summaries(self.api.orx.store, now=now)
        return JSONResponse({"breakers": rows, "now": now})

    async def list_runs(self, request: Request) -> Response:
        api = self.api
        tenant = api.scope(request)
        limit = api.limit_param(
            request, default=api.limits.page_run_list, maximum=api.limits.max_page_run_list
        )
        statuses = self._statuses(request)
        agent = self._text(request, "agent", "an agent's name")
        conversation = self._text(request, "conversation", "a conversation's id")
        since = self._since(request)
        before = api.run_param(request, "before")
        before_position = None
        if before is not None:
            try:
                before_position = (await api.orx.store.get_run(before, tenant=tenant)).position
            except NotFound:  # unknown, or another tenant's: the same answer
                raise _invalid("before", "before must be the id of a run") from None
        if conversation is not None:
            # Another tenant's conversation has no runs here, like an unknown one. Once it
            # is known to be the key's, its runs are read through its own index (all of a
            # conversation's runs belong to its tenant).
            try:
                await api.orx.store.get_conversation(conversation, tenant=tenant)
            except NotFound:
                return JSONResponse({"runs": [], "next": None})
        runs = await api.orx.store.list_runs(
            tenant=None if conversation is not None else tenant,
            conversation_id=conversation,
            status=statuses,
            agent=agent,
            before_position=before_position,
            limit=limit + 1,  # one more: is there a next page?
        )
        more = len(runs) > limit
        runs = runs[:limit]
        if since is not None:
            # Newest first: the list ends at the first run created before `since`.
            recent = list(takewhile(lambda r: r.created_at >= since, runs))
            more = more and len(recent) == len(runs)
            runs = recent
        next_url = None
        if more and runs:
            query: dict[str, Any] = {"limit": limit}
            for name in ("status", "agent", "conversation", "since"):
                value = request.query_params.get(name, "").strip()
                if value:
                    query[name] = value
            next_url = f"/v1/runs?{urlencode({**query, 'before': runs[-1].id})}"
        return JSONResponse(
            {
                "runs": [{**api.run_json(r), "tenant": r.tenant} for r in runs],
                "next": next_url,
            }
        )

    # ---- parameters -------------------------------------------------------------------

    def _statuses(self, request: Request) -> list[str] | None:
        value = request.query_params.get("status", "").strip()
        if not value:
            return None
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in RUN_STATUSES]
        if unknown or not statuses:
            raise _invalid(
                "status",
                f"status must be one or more of {', '.join(RUN_STATUSES)} (comma-separated)",
            )
        return statuses

    def _text(self, request: Request, name: str, what: str) -> str | None:
        """A filter's value (an empty one is no filter)."""
        value = request.query_params.get(name, "")
        if not value.strip():
            return None
        if not self.api.valid_id(value):
            limit = self.api.limits.max_id_chars
            raise _invalid(name, f"{name} must be {what} (printable, at most {limit} characters)")
        return value

    def _since(self, request: Request) -> float | None:
        value = request.query_params.get("since", "").strip()
        if not value:
            return None
        try:
            since = float(value)
        except ValueError:
            since = math.nan
        if not math.isfinite(since) or since < 0:
            raise _invalid("since", "since must be a time in seconds since the epoch (UTC)")
        return since


def _invalid(field: str, message: str) -> Exception:
    from orchestrion.server.app import ApiError  # app imports this module: import late

    return ApiError(422, "invalid_parameter", message, field=field)
