"""The public paged reads, on both stores (the `store_url` fixture): `Orchestrion.history`
(a list, and a page with `start` and `next`), `run_trace` and `conversation_trace`."""

from __future__ import annotations

import asyncio

import pytest

from orchestrion import Agent, Orchestrion, ScriptedModel, say
from orchestrion.errors import NotFound
from orchestrion.reading import HistoryPage, InvalidCursor
from tests.server.helpers import seed

TENANT = "tenant-a"
TURNS = 150


def chat() -> Agent:
    return Agent("chat", model=ScriptedModel([say("fine, thanks")]))


async def test_history_is_a_list_and_pages_both_ways(store_url: str) -> None:
    conversation, _ = await seed(store_url, turns=TURNS)
    async with Orchestrion(store_url, agents=[chat()], tenant=TENANT) as orx:
        # One more turn, executed by the engine: paging reads what the engine writes too.
        result = await orx.send("chat", "and now?", conversation=conversation)
        # (On PostgreSQL, `send` may return before the completion committed: the live
        # run.finished is published before its commit. Reported; not this test's subject.)
        for _ in range(500):
            result = await orx.result(result.run_id)
            if result.status == "succeeded":
                break
            await asyncio.sleep(0.01)
        total = 2 * TURNS + 2
        whole = await orx.history(conversation)
        assert isinstance(whole, list) and isinstance(whole, HistoryPage)
        assert len(whole) == total and whole.start == 0 and whole.next is None
        assert [m.content for m in whole[-2:]] == ["and now?", result.answer]
        # Back from the newest, 40 at a time.
        page = await orx.history(conversation, limit=40)
        assert page.start == total - 40 and page == whole[-40:]
        assert page.next == {"before": total - 40}
        pages = [page]
        while pages[-1].next:
            pages.append(await orx.history(conversation, limit=40, **pages[-1].next))
        assert [m for p in reversed(pages) for m in p] == whole
        assert pages[-1].start == 0 and len(pages) == 8
        # Forward from an index.
        forward = await orx.history(conversation, limit=100, after=199)
        assert forward.start == 200 and forward == whole[200:300]
        assert forward.next == {"after": 299}
        last = await orx.history(conversation, limit=100, **forward.next)
        assert last == whole[300:] and last.next is None
        first = await orx.history(conversation, limit=3, after=-1)
        assert first == whole[:3] and first.next == {"after": 2}
        assert await orx.history(conversation, limit=5, after=total - 1) == []
        with pytest.raises(ValueError, match="limit"):
            await orx.history(conversation, limit=0)
        # Another tenant's conversation does not exist for this one.
        with pytest.raises(NotFound):
            await orx.history(conversation, tenant="tenant-b", limit=10)


async def test_conversation_trace_pages_by_runs_and_run_trace_by_events(store_url: str) -> None:
    conversation, runs = await seed(store_url, turns=TURNS)
    async with Orchestrion(store_url, agents=[chat()], tenant=TENANT) as orx:
        page = await orx.conversation_trace(conversation, limit=30)
        assert [s.run_id for s in page.spans] == runs[-30:]
        assert [r.id for r in page.runs] == runs[-30:]
        assert page.next == {"before": runs[-30]}
        seen = [s.run_id for s in page.spans]
        while page.next:
            page = await orx.conversation_trace(conversation, limit=30, **page.next)
            seen = [s.run_id for s in page.spans] + seen
        assert seen == runs
        # The event budget cuts a page after the run that reaches it (21 events a run).
        budget = await orx.conversation_trace(conversation, limit=30, max_events=50)
        assert len(budget.spans) == 2 and budget.next == {"before": runs[-2]}
        forward = await orx.conversation_trace(conversation, limit=5, after=runs[100])
        assert [s.run_id for s in forward.spans] == runs[101:106]
        assert forward.next == {"after": runs[105]}
        with pytest.raises(InvalidCursor) as bad:
            await orx.conversation_trace(conversation, before="run_nope")
        assert bad.value.field == "before"
        # The same spans as the whole trace, page or not.
        whole = await orx.trace(conversation)
        assert [s.run_id for s in whole] == runs
        # One run's trace, 8 events a page; last_seq says where to follow it.
        run = runs[3]
        trace = await orx.run_trace(run, limit=8)
        assert trace.last_seq == 8 and trace.next == {"after": 8}
        (root,) = trace.spans
        assert root.run_id == run and root.parent_span_id is None
        rest = await orx.run_trace(run, after=8)
        assert rest.last_seq == 21 and rest.next is None
        all_at_once = await orx.run_trace(run)
        assert [s.span_id for s in all_at_once.spans[0].walk()] == [
            s.span_id for s in (await orx.trace(run))[0].walk()
        ]
        with pytest.raises(NotFound):
            await orx.run_trace(run, tenant="tenant-b")
