"""Every model and tool call of a turn goes through its dependency's resilience pipeline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from orchestrion import (
    Agent,
    Orchestrion,
    RetryPolicy,
    ScriptedModel,
    ToolContext,
    call,
    say,
    tool,
)
from orchestrion.errors import BadRequest, ProviderUnavailable, RateLimited
from orchestrion.models.messages import ModelDelta, ModelRequest

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, jitter=False)


class FlakyModel:
    """Fails with the given errors first, then answers from its script."""

    def __init__(self, errors: list[Exception], inner: ScriptedModel, name: str = "flaky") -> None:
        self.errors = list(errors)
        self.inner = inner
        self.name = name
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        async for delta in self.inner.stream(request):
            yield delta


async def event_types(orx: Orchestrion, run_id: str) -> list[str]:
    return [e.type for e in await orx.store.read_events(run_id)]


async def test_rate_limited_model_calls_are_retried_and_the_waits_traced(db_path: Path) -> None:
    model = FlakyModel(
        [RateLimited("slow down", status_code=429, retry_after=0.02),
         ProviderUnavailable("overloaded", status_code=529)],
        ScriptedModel([say("finally")]),
    )
    agent = Agent("a", model=model, retry=FAST)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("a", "hi")
        assert result.status == "succeeded" and result.answer == "finally"
        assert model.calls == 3
        events = await orx.store.read_events(result.run_id)
        waits = [e for e in events if e.type == "retry.wait"]
        assert [w.attributes["reason"] for w in waits] == ["retry_after", "backoff"]
        assert waits[0].attributes["retry_after"] == 0.02
        chat_span = next(e for e in events if e.type == "step.finished" and e.name == "chat flaky")
        assert all(w.parent_span_id == chat_span.span_id for w in waits)


async def test_a_bad_request_is_not_retried_and_the_user_sees_no_raw_error(db_path: Path) -> None:
    model = FlakyModel([BadRequest("messages.0: invalid role", status_code=400)],
                       ScriptedModel([say("unreachable")]))
    agent = Agent("a", model=model, retry=FAST)
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("a", "hi")
        assert result.status == "failed" and model.calls == 1
        assert result.answer == agent.degradation_message
        assert "invalid role" not in result.answer
        assert result.error is not None and result.error["type"] == "BadRequest"


async def test_a_fallback_model_answers_when_the_primary_is_down(db_path: Path) -> None:
    down = FlakyModel([ProviderUnavailable("down", status_code=503)] * 10,
                      ScriptedModel([say("unreachable")]), name="primary")
    backup = ScriptedModel([say("answered by the backup")], name="backup")
    agent = Agent("a", model=down, retry=RetryPolicy(max_attempts=2, base_delay=0.01),
                  fallback_models=[backup])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("a", "hi")
        assert result.status == "succeeded" and result.answer == "answered by the backup"
        assert down.calls == 2 and backup.calls == 1
        assert "fallback.used" in await event_types(orx, result.run_id)


async def test_an_open_breaker_fails_fast_across_turns(db_path: Path) -> None:
    down = FlakyModel([ProviderUnavailable("down", status_code=503)] * 100,
                      ScriptedModel([say("unreachable")]), name="dead-model")
    agent = Agent("a", model=down, retry=RetryPolicy(max_attempts=1))
    small_window = {"minimum_calls": 3, "window_size": 3}
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent],
                           breaker_settings=small_window) as orx:
        outcomes = [await orx.send("a", f"try {i}") for i in range(5)]
        assert all(r.status == "failed" for r in outcomes)
        assert down.calls == 3  # the last two turns never reached the provider
        assert outcomes[-1].error is not None and outcomes[-1].error["type"] == "BreakerOpen"
        assert "model:dead-model" in outcomes[-1].error["message"]
        assert outcomes[-1].answer == agent.degradation_message
        breakers = {name: state for name, state, _v in await orx.store.list_breakers()}
        assert breakers["model:dead-model"]["state"] == "open"
        # The retry budget of that dependency is shared through the store too.
        assert "budget:model:dead-model" in breakers


async def test_a_tool_that_fails_transiently_is_retried_under_the_same_key(db_path: Path) -> None:
    keys: list[str] = []

    @tool(effect="write", retry=FAST)
    async def charge(amount: int, ctx: ToolContext) -> str:
        """Charge a card."""
        keys.append(ctx.idempotency_key)
        await ctx.record_effect("charge", {"amount": amount})
        if len(keys) < 3:
            raise ConnectionError("card network reset the connection")
        return "charged"

    agent = Agent("pay", model=ScriptedModel([call("charge", amount=5), say("paid")]),
                  tools=[charge])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("pay", "pay")
        assert result.status == "succeeded"
        assert len(keys) == 3 and len(set(keys)) == 1
        assert len(await orx.store.list_effects(kind="charge")) == 1
        types = await event_types(orx, result.run_id)
        assert types.count("retry.wait") == 2


async def test_a_plain_tool_exception_is_not_retried(db_path: Path) -> None:
    attempts: list[int] = []

    @tool(retry=FAST)
    async def parse(text: str) -> str:
        """Parse."""
        attempts.append(1)
        raise ValueError("cannot parse that")

    agent = Agent("p", model=ScriptedModel([call("parse", text="x"), say("gave up")]),
                  tools=[parse])
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("p", "parse", conversation="c")
        assert result.status == "succeeded" and len(attempts) == 1
        tool_message = next(m for m in await orx.history("c") if m.role == "tool")
        assert tool_message.is_error and "cannot parse that" in (tool_message.content or "")


async def test_a_retry_after_beyond_the_deadline_gives_up_at_once(db_path: Path) -> None:
    model = FlakyModel([RateLimited("later", status_code=429, retry_after=30)],
                       ScriptedModel([say("unreachable")]))
    agent = Agent("a", model=model, turn_timeout=2.0,
                  retry=RetryPolicy(max_attempts=3, max_retry_after=60))
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("a", "hi")
        assert result.status == "failed" and model.calls == 1
        assert result.error is not None and result.error["type"] == "DeadlineExceeded"
        events = await orx.store.read_events(result.run_id)
        # It gave up at once for the deadline's sake, rather than sleeping into it.
        assert "retry.wait" not in [e.type for e in events]
        giveup = next(e for e in events if e.type == "retry.giveup")
        assert giveup.attributes["reason"] == "deadline"


def test_breakers_command_lists_the_open_breaker(db_path: Path) -> None:
    import asyncio

    async def trip() -> None:
        down = FlakyModel([ProviderUnavailable("down", status_code=503)] * 100,
                          ScriptedModel([say("x")]), name="cli-model")
        agent = Agent("a", model=down, retry=RetryPolicy(max_attempts=1))
        async with Orchestrion(f"sqlite:///{db_path}", agents=[agent],
                               breaker_settings={"minimum_calls": 2}) as orx:
            for i in range(3):
                await orx.send("a", f"t{i}")

    asyncio.run(trip())
    cli = str(Path(sys.executable).parent / "orchestrion")
    out = subprocess.run([cli, "--store", f"sqlite:///{db_path}", "breakers", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"model:cli-model"' in out.stdout and '"open"' in out.stdout


async def test_the_cached_answer_serves_a_request_when_the_model_is_down(db_path: Path) -> None:
    healthy = ScriptedModel([say("the cached forecast")], name="cachey")
    agent = Agent("a", model=healthy, cache_answers=True, retry=RetryPolicy(max_attempts=1))
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        first = await orx.send("a", "forecast?", conversation="c1")
        assert first.answer == "the cached forecast"
        agent.model = FlakyModel([ProviderUnavailable("down", status_code=503)] * 5,
                                 ScriptedModel([say("x")]), name="cachey")
        again = await orx.send("a", "forecast?", conversation="c2")  # same request, new thread
        assert again.status == "succeeded" and again.answer == "the cached forecast"
        used = [e for e in await orx.store.read_events(again.run_id) if e.type == "fallback.used"]
        assert used and used[0].attributes["option"] == "cached answer"
        different = await orx.send("a", "something else?", conversation="c3")
        assert different.status == "failed"  # no cached answer for another request


async def test_a_classifier_override_retries_what_the_defaults_would_not(db_path: Path) -> None:
    from orchestrion.resilience.classify import Classifier

    model = FlakyModel([BadRequest("flaky gateway says 400", status_code=400)],
                       ScriptedModel([say("second time lucky")]))
    agent = Agent("a", model=model, retry=FAST,
                  classifier=Classifier(retry_on=(BadRequest,)))
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("a", "hi")
        assert result.status == "succeeded" and model.calls == 2


async def test_hedging_cancels_the_slow_request(db_path: Path) -> None:
    import asyncio

    from orchestrion import HedgePolicy

    class SlowFirst:
        name = "hedged"

        def __init__(self) -> None:
            self.started = 0
            self.cancelled = 0
            self.inner = ScriptedModel([say("fast answer")])

        async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
            self.started += 1
            if self.started == 1:
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise
            async for delta in self.inner.stream(request):
                yield delta

    model = SlowFirst()
    agent = Agent("h", model=model, hedge=HedgePolicy(delay=0.05))
    async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
        result = await orx.send("h", "hi")
        assert result.status == "succeeded" and result.answer == "fast answer"
        assert model.started == 2 and model.cancelled == 1
        types = await event_types(orx, result.run_id)
        assert "hedge.fired" in types and "hedge.won" in types
