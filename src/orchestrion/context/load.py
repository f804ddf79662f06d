"""Loading what a turn's context is built from: only the window and the summary.

Nothing here reads the whole history (except for `keep_all`, and for a custom policy
that asks for all of it): the pinned messages are the first few by index, the window is
read newest first, page by page, until it holds the policy's budget, and summaries are a
handful of rows. So a turn's reads do not grow with the conversation.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

from orchestrion.context.policy import ContextPolicy
from orchestrion.context.tokens import Estimator, TokenCounter
from orchestrion.context.units import units
from orchestrion.models.messages import Message
from orchestrion.store.base import MessageRecord, RunRecord, Store, SummaryRecord

FIRST_PAGE_MIN, FIRST_PAGE_MAX, PAGE_MAX = 8, 256, 1024
TOKENS_PER_ROW_GUESS = 100  # sizes the first page; the next ones from the rows read
PINNED_SLACK = 16  # extra rows read after the pinned ones, to finish a tool-call unit


@dataclass(frozen=True, slots=True)
class Stored:
    """A message of the history and its index there."""

    index: int
    message: Message


def stored(records: list[MessageRecord]) -> list[Stored]:
    return [Stored(r.index, Message.model_validate(r.body)) for r in records]


@dataclass
class LoadedContext:
    """What a turn's requests are built from, as stored when the run started."""

    message_count: int  # messages ever appended to the conversation (the next index)
    estimator: Estimator
    pinned: list[Stored] = field(default_factory=list)
    # The newest summary made by an earlier run (what this run started from), and the
    # summaries this run already made (found again when it resumes), by label.
    base: SummaryRecord | None = None
    own: dict[str, SummaryRecord] = field(default_factory=dict)
    history: list[Stored] = field(default_factory=list)  # after the pinned ones and the base
    calibration: float | None = None
    learned_limit: int | None = None  # a context window a provider stated earlier
    rows_hint: int | None = None  # how many stored messages the last turn's window held
    reads: int = 0  # store reads made to load it (the benchmark reports them)

    @property
    def pinned_end(self) -> int:
        """The index after the last pinned message (-1 + 1 when none)."""
        return self.pinned[-1].index + 1 if self.pinned else 0


def _pinned_prefix(records: list[Stored], count: int) -> list[Stored]:
    """The first `count` messages, extended to finish a tool-call unit (or cut before it
    when its results are not among `records`)."""
    kept = 0
    for unit in units([r.message for r in records]):
        if kept >= count:
            break
        if not unit.complete:
            break
        kept = unit.end
    return records[:kept]


async def load_context(
    store: Store,
    policy: ContextPolicy,
    run: RunRecord,
    *,
    message_count: int,
    exact: TokenCounter | None = None,
) -> LoadedContext:
    """What run `run` builds its requests from (`exact`: the model's own token counter)."""
    loaded = LoadedContext(message_count=message_count, estimator=Estimator(exact=exact))
    cid = run.conversation_id
    if policy.kind == "keep_all" or (policy.kind == "custom" and policy.load_messages is None):
        loaded.history = stored(await store.history_page(cid, limit=None))
        loaded.reads += 1
        return loaded
    if policy.kind == "custom":
        assert policy.load_messages is not None
        loaded.history = stored(await store.history_tail(cid, limit=policy.load_messages))
        loaded.reads += 1
        return loaded

    # Independent small reads, at once (on PostgreSQL: on several connections): what the
    # last turn learned, the pinned messages, the summaries. Then the window, after them.
    previous, first, summaries = await asyncio.gather(
        store.list_runs(
            conversation_id=cid, status="succeeded", before_position=run.position, limit=1
        ),
        _pinned_rows(store, cid, policy.pinned),
        store.load_summaries(cid) if policy.kind == "summarize" else _nothing(),
    )
    loaded.reads += 1 + bool(policy.pinned) + (policy.kind == "summarize")
    if previous:
        learned = _context_state(previous[0].result)
        loaded.calibration = learned.get("calibration")
        loaded.learned_limit = learned.get("limit")
        loaded.rows_hint = learned.get("rows")
        loaded.estimator = Estimator(loaded.calibration, exact)
    loaded.pinned = _pinned_prefix(stored(first), policy.pinned)
    after = loaded.pinned_end - 1
    loaded.own = {s.label: s for s in summaries if s.run_id == run.id}
    loaded.base = next((s for s in summaries if s.run_id != run.id), None)
    if loaded.base is not None:
        after = max(after, loaded.base.last_index)
    loaded.history = await _read_window(store, cid, policy, after, loaded)
    return loaded


async def _pinned_rows(store: Store, cid: str, count: int) -> list[MessageRecord]:
    if not count:
        return []
    return await store.history_page(cid, after=-1, limit=count + PINNED_SLACK)


async def _nothing() -> list[SummaryRecord]:
    return []


def _context_state(result: dict[str, Any] | None) -> dict[str, Any]:
    state = (result or {}).get("context")
    if not isinstance(state, dict):
        return {}
    out: dict[str, Any] = {}
    calibration = state.get("calibration")
    if isinstance(calibration, int | float) and calibration > 0:
        out["calibration"] = float(calibration)
    for key in ("limit", "rows"):
        value = state.get(key)
        if isinstance(value, int) and value > 0:
            out[key] = value
    return out


async def _read_window(
    store: Store,
    cid: str,
    policy: ContextPolicy,
    after: int,
    loaded: LoadedContext,
) -> list[Stored]:
    """The newest messages after index `after`, read backward a page at a time until they
    hold the budget (twice it for summarize: what may have to be folded), or
    `max_messages` of them, or there are no more."""
    assert policy.max_tokens is not None
    budget = policy.max_tokens * (2 if policy.kind == "summarize" else 1)
    if loaded.learned_limit is not None:
        budget = min(budget, loaded.learned_limit * (2 if policy.kind == "summarize" else 1))
    wanted = policy.max_messages
    # The first page: what the last turn's window held and a fifth more (the messages
    # of a conversation tend to keep their size), else a guess from the budget.
    guess = budget // TOKENS_PER_ROW_GUESS
    if loaded.rows_hint is not None:
        guess = math.ceil(loaded.rows_hint * 1.2) + 2
    page = min(FIRST_PAGE_MAX, max(FIRST_PAGE_MIN, guess))
    found: list[Stored] = []
    tokens, before = 0, None
    while True:
        size = page if wanted is None else min(page, wanted - len(found))
        rows = stored(await store.history_tail(cid, limit=size, after=after, before=before))
        loaded.reads += 1
        found[:0] = rows
        tokens += sum(loaded.estimator.message(r.message) for r in rows)
        full = wanted is not None and len(found) >= wanted
        if len(rows) < size or tokens >= budget or full:
            return found
        before = rows[0].index
        # Size the next page by the rows seen so far: what is left of the budget, in rows
        # of their average size, and a fifth more.
        per_row = max(1.0, tokens / len(found))
        page = max(FIRST_PAGE_MIN, min(PAGE_MAX, math.ceil((budget - tokens) / per_row * 1.2)))
