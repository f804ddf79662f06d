"""Context policies through the real engine, on both stores: what each model request
carries, what the store reads and keeps, summaries, calibration, and context-length
errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from orchestrion import Agent, Message, Orchestrion, ScriptedModel, render_text, say
from orchestrion.context import DEFAULT_CONTEXT, custom, keep_all, summarize, window
from orchestrion.context.builder import stated_limit
from orchestrion.context.tokens import Estimator, estimate_message
from orchestrion.engine.owner import process_identity
from orchestrion.engine.worker import Worker
from orchestrion.errors import ProviderUnavailable
from orchestrion.models.messages import ModelRequest
from orchestrion.store.base import EventRecord, SummaryRecord
from tests.context.support import ReadCounter, Recording, Windowed, chat_turns, seed_turns

SUMMARY = "Summary: the user asked many questions about ipsum; all were answered."


def agent(model: Any, context: Any = None, **kwargs: Any) -> Agent:
    return Agent("chat", model=model, instructions="Be brief.", context=context, **kwargs)


async def step_events(orx: Orchestrion, run_id: str, prefix: str = "chat") -> list[EventRecord]:
    return [
        e
        for e in await orx.store.read_events(run_id)
        if e.type == "step.finished" and e.name.startswith(prefix)
    ]


def chars(request: ModelRequest) -> int:
    return sum(len(m.content or "") for m in request.messages)


# ---- policies as values --------------------------------------------------------------------


def test_the_default_is_a_window_and_policies_check_their_arguments() -> None:
    assert agent(ScriptedModel([say("x")])).context_policy == DEFAULT_CONTEXT == window(16_000)
    assert agent(ScriptedModel([say("x")]), keep_all()).context_policy.kind == "keep_all"
    fn = agent(ScriptedModel([say("x")]), lambda messages: messages).context_policy
    assert fn.kind == "custom" and fn.function is not None
    for bad, message in (
        (lambda: window(0), "window: max_tokens must be a whole number of at least 1, not 0"),
        (lambda: window(100, max_messages=-2), "max_messages must be a whole number"),
        (lambda: summarize(100, keep_recent=-1), "keep_recent must be a whole number, 0 or more"),
        (lambda: summarize(100, retain="none"), "retain must be 'all' or 'summary'"),  # type: ignore[arg-type]
        (lambda: custom(42), "expected a function of the messages"),  # type: ignore[arg-type]
        (lambda: agent(ScriptedModel([say("x")]), 42), "context must be a policy"),
    ):
        with pytest.raises((ValueError, TypeError)) as info:
            bad()
        assert message in str(info.value) and "\n" not in str(info.value)
    assert window(8000, pinned=2).describe() == "window(max_tokens=8000, pinned=2)"
    assert "retain='summary'" in summarize(900, retain="summary").describe()


def test_context_length_errors_state_their_numbers() -> None:
    openai = (
        "This model's maximum context length is 8192 tokens. However, your messages "
        "resulted in 9001 tokens. Please reduce the length of the messages."
    )
    assert stated_limit(openai) == (8192, 9001)
    assert stated_limit("prompt is too long: 210000 tokens > 200000 maximum") == (200000, 210000)
    assert stated_limit("input is too long for the model") is None


def test_the_estimate_is_calibrated_by_reported_tokens_and_clamped() -> None:
    estimator = Estimator()
    text = Message.user("word " * 400)  # 2,000 bytes
    assert estimator.message(text) == estimate_message(text) == 4 + 500
    estimator.observe(raw_estimate=1000, reported=800)
    assert estimator.calibration == pytest.approx(0.8)
    estimator.observe(raw_estimate=1000, reported=1200)  # smoothed: halfway
    assert estimator.calibration == pytest.approx(1.0)
    assert estimator.message(text) == 504
    estimator.observe(raw_estimate=10, reported=100_000)  # absurd: clamped
    assert estimator.calibration == 4.0
    estimator.observe(raw_estimate=1000, reported=0)  # the provider said nothing
    assert estimator.calibration == 4.0

    class Exact:
        def count_tokens(self, messages: Any) -> int:
            return 7 * len(messages)

    exact = Estimator(calibration=2.0, exact=Exact())
    assert exact.message(text) == 7  # its own count, never scaled


# ---- windows ----------------------------------------------------------------------------------


async def test_a_window_sends_the_newest_messages_that_fit_and_the_store_keeps_all(
    store_url: str,
) -> None:
    model = Recording([say("short answer")])
    async with Orchestrion(store_url, agents=[agent(model, window(2_000))]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(100), agent="chat")
        result = await orx.send("chat", "what now?", conversation="c1")
        assert result.status == "succeeded"
        sent = model.requests[0].messages
        assert sent[0] == Message.system("Be brief.")
        assert sent[-1] == Message.user("what now?")
        assert sent[1].role == "user"  # the window opens on a question
        assert sent[-2].content is not None and sent[-2].content.startswith("answer 99:")
        assert 1_600 < chars(model.requests[0]) / 4 < 2_000  # the budget, nearly filled
        (finished,) = await step_events(orx, result.run_id)
        a = finished.attributes
        assert a["context.policy"] == "window(max_tokens=2000)"
        assert a["context.message_count"] == len(sent)
        assert a["context.history_count"] == len(sent) - 2
        assert a["context.trimmed"] == 200 - a["context.history_count"]
        assert a["context.trimmed_through"] == 199 - a["context.history_count"]
        assert a["context.estimated_tokens"] <= 2_000 and a["context.summary"] is False
        # `orchestrion trace` says so too.
        text = render_text(await orx.trace(result.run_id))
        assert f"{len(sent)} messages" in text and f"{a['context.trimmed']} left out" in text
        # Trimming is for the request only: the history holds every message.
        assert len(await orx.history("c1")) == 202


async def test_max_messages_and_pinned_messages(store_url: str) -> None:
    model = Recording([say("ok")])
    policy = window(50_000, max_messages=7, pinned=2)
    async with Orchestrion(store_url, agents=[agent(model, policy)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(40), agent="chat")
        await orx.send("chat", "and then?", conversation="c1")
        sent = model.requests[0].messages
        first = chat_turns(1)[0]
        assert list(sent[:3]) == [Message.system("Be brief."), *first]  # pinned: the opening
        rest = sent[3:]
        assert len(rest) <= 7 and rest[0].role == "user" and rest[-1].content == "and then?"


async def test_reads_per_turn_do_not_grow_with_the_conversation(store_url: str) -> None:
    """Loading a turn's context reads a window through the index: the same reads, and
    about the same rows, for a conversation of 100 turns and one of 400 (both longer than
    the window); keep_all reads everything."""
    reads: dict[str, tuple[int, int]] = {}
    async with Orchestrion(
        store_url,
        agents=[
            agent(ScriptedModel([say("ok")]), window(3_000)),
            Agent("all", model=ScriptedModel([say("ok")]), context=keep_all()),
        ],
    ) as orx:
        counter = ReadCounter(orx.store)
        for name, turns in (("short", 100), ("long", 400)):
            for who in ("chat", "all"):
                cid = f"{name}-{who}"
                await seed_turns(orx.store, cid, chat_turns(turns, size=300), agent=who)
                counter.reset()
                result = await orx.send(who, "next", conversation=cid)
                assert result.status == "succeeded"
                reads[cid] = (counter.total, counter.rows)
    assert reads["short-chat"] == reads["long-chat"]  # the same store calls and rows
    assert reads["long-chat"][1] < 80  # rows: a window (~3,000 tokens of 80-token messages)
    assert reads["short-all"][1] >= 200 and reads["long-all"][1] >= 800  # all of it


# ---- calibration and context-length errors ------------------------------------------------


async def test_calibration_is_learned_and_carried_to_the_next_turn(store_url: str) -> None:
    model = Recording([say("ok")])
    async with Orchestrion(store_url, agents=[agent(model, window(4_000))]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(30), agent="chat")
        first = await orx.send("chat", "one", conversation="c1")
        run = await orx.store.get_run(first.run_id)
        assert run.result is not None
        learned = run.result["context"]["calibration"]
        # The scripted model counts characters / 4 and no framing: below the estimate.
        assert 0.5 < learned < 1.0
        second = await orx.send("chat", "two", conversation="c1")
        (step,) = await step_events(orx, second.run_id)
        assert step.attributes["context.calibration"] == round(learned, 3)
        # A calibrated estimate is close to what the model counted.
        reported = chars(model.requests[1]) // 4 + 1
        assert abs(step.attributes["context.estimated_tokens"] - reported) < 0.05 * reported


async def test_a_context_length_error_shrinks_the_context_once_and_is_remembered(
    store_url: str,
) -> None:
    model = Windowed([say("fits now")], window=1_000)
    async with Orchestrion(store_url, agents=[agent(model, window(6_000))]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(60), agent="chat")
        result = await orx.send("chat", "hello?", conversation="c1")
        assert result.status == "succeeded" and result.answer == "fits now"
        assert model.refused == 1 and len(model.requests) == 2
        refused, accepted = await step_events(orx, result.run_id)
        assert refused.status == "error" and refused.attributes["error.type"] == (
            "ContextLengthExceeded"
        )
        assert accepted.attributes["context.shrunk"] is True
        assert accepted.attributes["context.budget"] == 900  # 90% of the stated window
        assert chars(model.requests[1]) // 4 + 1 <= 1_000
        # The next turn starts from the window the provider stated: no second refusal.
        again = await orx.send("chat", "and now?", conversation="c1")
        assert again.status == "succeeded" and model.refused == 1
        run = await orx.store.get_run(again.run_id)
        assert run.result is not None and run.result["context"]["limit"] == 1_000


async def test_keep_all_fails_past_the_window_and_a_second_overflow_fails_the_turn(
    store_url: str,
) -> None:
    kept_all = Windowed([say("never")], window=1_000)
    tiny = Windowed([say("never")], window=5, name="tiny")
    async with Orchestrion(
        store_url,
        agents=[agent(kept_all, keep_all()), Agent("tiny", model=tiny, context=window(6_000))],
    ) as orx:
        await seed_turns(orx.store, "c1", chat_turns(60), agent="chat")
        failed = await orx.send("chat", "hello?", conversation="c1")
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["type"] == "ContextLengthExceeded"
        assert kept_all.refused == 1  # keep_all never shrinks
        # Even the question alone is over the window: one shrink, then the turn fails.
        failed = await orx.send("tiny", "a question longer than five tokens", conversation="t")
        assert failed.status == "failed" and tiny.refused == 2


# ---- summaries ----------------------------------------------------------------------------------


async def test_summaries_are_made_when_needed_stored_reused_and_extended(store_url: str) -> None:
    summariser = Recording([say(SUMMARY)], name="summariser")
    model = Recording([say("ok " * 300)])
    policy = summarize(2_000, keep_recent=4, model=summariser)
    async with Orchestrion(store_url, agents=[agent(model, policy)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(12), agent="chat")
        for i in range(20):
            assert (await orx.send("chat", f"question {i}", conversation="c1")).status == (
                "succeeded"
            )
        # Not every turn: only when the unsummarised part no longer fits.
        assert 2 <= len(summariser.requests) <= 8
        # Each summary extends the previous one with what fell out since.
        first, second = summariser.requests[0], summariser.requests[1]
        assert "Summary so far:\n(none yet)" in (first.messages[1].content or "")
        assert f"Summary so far:\n{SUMMARY}" in (second.messages[1].content or "")
        assert "question 0:" in (first.messages[1].content or "")
        assert "question 0:" not in (second.messages[1].content or "")
        summaries = await orx.store.load_summaries("c1")
        assert summaries[0].text == SUMMARY and summaries[0].first_index == 0
        assert summaries[0].model == "summariser" and summaries[0].input_tokens > 0
        assert len(summaries) <= 3  # older ones pruned
        # Every request after the first summary carries it, and stays in the budget.
        last = model.requests[-1].messages
        assert last[1].role == "system" and SUMMARY in (last[1].content or "")
        assert last[1].content is not None and "no longer shown" in last[1].content
        assert chars(model.requests[-1]) // 4 < 2_000
        runs = await orx.store.list_runs(conversation_id="c1", limit=1)
        (step,) = await step_events(orx, runs[0].id)
        assert step.attributes["context.summary"] is True
        assert step.attributes["context.trimmed"] == 0  # summarised, not dropped
        # The full history is still stored (retain="all", the default).
        assert len(await orx.history("c1")) == 24 + 40


async def test_max_messages_also_makes_a_summary(store_url: str) -> None:
    summariser = Recording([say(SUMMARY)], name="summariser")
    model = Recording([say("ok")])
    policy = summarize(50_000, max_messages=10, keep_recent=4, model=summariser)
    async with Orchestrion(store_url, agents=[agent(model, policy)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(8), agent="chat")
        await orx.send("chat", "next", conversation="c1")
        assert len(summariser.requests) == 1  # far under the token budget, over 10 messages
        sent = model.requests[0].messages
        assert SUMMARY in (sent[1].content or "") and len(sent) == 2 + 4 + 1


async def test_retain_summary_drops_summarised_messages_but_not_pinned_ones(
    store_url: str,
) -> None:
    summariser = ScriptedModel([say(SUMMARY)], name="summariser")
    model = Recording([say("ok")])
    policy = summarize(1_500, keep_recent=2, model=summariser, pinned=2, retain="summary")
    async with Orchestrion(store_url, agents=[agent(model, policy)]) as orx:
        # 12 turns: over the budget, and within what a turn reads (twice the budget).
        await seed_turns(orx.store, "c1", chat_turns(12), agent="chat")
        await orx.send("chat", "one more", conversation="c1")
        (summary,) = await orx.store.load_summaries("c1")
        assert summary.first_index == 2  # after the pinned ones
        history = await orx.history("c1")
        kept = [m.content for m in history]
        first = chat_turns(1)[0]
        assert kept[:2] == [m.content for m in first]  # pinned: kept
        assert len(history) == 2 + (26 - summary.last_index - 1)
        page = await orx.history("c1", limit=3, before=summary.last_index + 2)
        assert page.start == 0 and len(page) == 3  # paging skips the gap
        assert list(model.requests[0].messages[1:3]) == first


async def test_summarising_a_long_history_it_never_summarised_starts_from_the_window(
    store_url: str,
) -> None:
    """Turning summarize() on for a long conversation summarises what a turn reads (twice
    the budget), not the whole past: older messages stay stored, but are left out (and
    retain="summary" does not drop them: they were never summarised)."""
    summariser = Recording([say(SUMMARY)], name="summariser")
    policy = summarize(1_500, keep_recent=2, model=summariser, retain="summary")
    async with Orchestrion(store_url, agents=[agent(Recording([say("ok")]), policy)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(60), agent="chat")
        result = await orx.send("chat", "one more", conversation="c1")
        (summary,) = await orx.store.load_summaries("c1")
        assert summary.first_index > 60 and summary.last_index >= 110
        remaining = await orx.history("c1")
        assert len(remaining) == 122 - (summary.last_index - summary.first_index + 1)
        (chat,) = await step_events(orx, result.run_id)
        assert chat.attributes["context.trimmed"] == summary.first_index  # the gap


async def test_a_failed_summary_degrades_to_the_window_and_says_so(store_url: str) -> None:
    class Broken(ScriptedModel):
        async def stream(self, request: ModelRequest) -> Any:
            raise ProviderUnavailable("summariser down", status_code=503)
            yield  # pragma: no cover

    model = Recording([say("still fine")])
    policy = summarize(1_500, keep_recent=2, model=Broken([say("x")], name="broken"))
    async with Orchestrion(store_url, agents=[agent(model, policy, retry=None)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(30), agent="chat")
        result = await orx.send("chat", "hi", conversation="c1")
        assert result.status == "succeeded" and result.answer == "still fine"
        events = await orx.store.read_events(result.run_id)
        (failed,) = [e for e in events if e.type == "context.summary.failed"]
        assert failed.status == "error" and failed.attributes["context.fallback"] == "window"
        assert failed.attributes["error.type"] == "ProviderUnavailable"
        text = render_text(await orx.trace(result.run_id))
        assert "context summary failed (ProviderUnavailable): the window was used" in text
        (summary_step,) = await step_events(orx, result.run_id, "summarize")
        assert summary_step.status == "error"
        (chat,) = await step_events(orx, result.run_id)
        assert chat.attributes["context.summary"] is False and chat.attributes["context.trimmed"]
        assert chars(model.requests[0]) // 4 < 1_500
        assert await orx.store.load_summaries("c1") == []


async def test_a_resumed_run_uses_the_summary_it_stored_before_it_died(store_url: str) -> None:
    """The summarising step stored its summary, then the process died before the step was
    recorded: the run resumes elsewhere, re-executes the step, and finds the summary
    instead of asking the model again."""
    summariser = Recording([say("a different summary")], name="summariser")
    model = Recording([say("ok")])
    policy = summarize(1_500, keep_recent=2, model=summariser)
    async with Orchestrion(store_url, agents=[agent(model, policy)]) as orx:
        await seed_turns(orx.store, "c1", chat_turns(30), agent="chat")
        run = await orx.submit("chat", "resume me", conversation="c1")
        dead = process_identity(999_999)  # no such process: provably dead
        lease = await orx.store.claim(
            run.id, owner=dead, expected_epoch=0, lease_seconds=300, now=time.time()
        )
        assert lease is not None
        made = SummaryRecord("c1", run.id, "round 0", 0, 55, SUMMARY, "summariser", 900, 40, 1.0)
        await orx.store.save_summary(lease, made)
        claimed = await Worker(orx.store, orx.agents).claim_next()
        assert claimed is not None
        taken, new_lease, resumed = claimed
        assert resumed
        assert await Worker(orx.store, orx.agents).execute(taken, new_lease, resumed=True) == (
            "succeeded"
        )
        assert summariser.requests == []  # made once, before the crash
        assert SUMMARY in (model.requests[0].messages[1].content or "")
        assert await orx.store.load_summaries("c1") == [made]
        (step,) = await step_events(orx, run.id, "summarize")
        assert step.status == "ok"


async def test_a_custom_function_chooses_from_history_and_turn(store_url: str) -> None:
    given: list[list[Message]] = []

    def last_four(messages: list[Message]) -> list[Message]:
        given.append(messages)
        return messages[-4:]

    model = Recording([say("ok")])
    async with Orchestrion(
        store_url, agents=[agent(model, custom(last_four, load_messages=10))]
    ) as orx:
        await seed_turns(orx.store, "c1", chat_turns(20), agent="chat")
        await orx.send("chat", "hi", conversation="c1")
    assert len(given[0]) == 11 and given[0][-1] == Message.user("hi")
    assert model.requests[0].messages == (Message.system("Be brief."), *given[0][-4:])
