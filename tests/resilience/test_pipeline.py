import asyncio
import random
from typing import Any

import pytest

from orchestrion.errors import (
    BadRequest,
    DeadlineExceeded,
    ProviderUnavailable,
    RateLimited,
)
from orchestrion.resilience import (
    OPEN,
    Attempt,
    AttemptState,
    AttemptTimeout,
    BreakerOpen,
    CircuitBreaker,
    Classifier,
    FakeClock,
    FallbackChain,
    HedgePolicy,
    InMemoryAttemptJournal,
    ResiliencePipeline,
    RetryAfterTooLong,
    RetryBudget,
    RetryPolicy,
    deadline,
    degrade,
)

Events = list[tuple[str, dict[str, Any]]]

FIXED = RetryPolicy(max_attempts=4, base_delay=1, max_delay=8, jitter=False, max_elapsed=None)


def make(clock: FakeClock, events: Events, **kw: Any) -> ResiliencePipeline:
    kw.setdefault("retry", FIXED)
    return ResiliencePipeline("llm", clock=clock, on_event=lambda t, a: events.append((t, a)), **kw)


def script(*steps: Any) -> Any:
    """An async fn that raises or returns the next scripted item per attempt."""
    seen: list[Attempt] = []
    it = iter(steps)

    async def fn(a: Attempt) -> Any:
        seen.append(a)
        step = next(it)
        if isinstance(step, BaseException):
            raise step
        return step

    fn.seen = seen  # type: ignore[attr-defined]
    return fn


async def test_success_first_time_reports_one_attempt() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    fn = script("ok")
    assert await p.call(fn) == "ok"
    assert [t for t, _ in events] == ["retry.attempt"]
    assert events[0][1]["outcome"] == "success" and events[0][1]["attempt"] == 1
    assert fn.seen[0].number == 1 and fn.seen[0].pipeline == "llm"


async def test_retries_with_backoff_then_succeeds() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    fn = script(ProviderUnavailable("a", status_code=503), ConnectionError(), "ok")
    assert await p.call(fn) == "ok"
    assert [a.number for a in fn.seen] == [1, 2, 3]
    assert clock.sleeps == [1, 2]
    waits = [a for t, a in events if t == "retry.wait"]
    assert [(w["delay"], w["reason"], w["next_attempt"]) for w in waits] == [
        (1, "backoff", 2),
        (2, "backoff", 3),
    ]
    outcomes = [a["outcome"] for t, a in events if t == "retry.attempt"]
    assert outcomes == ["error", "error", "success"]


async def test_gives_up_after_max_attempts_with_the_original_error() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    errors = [ProviderUnavailable(f"e{i}", status_code=500) for i in range(4)]
    with pytest.raises(ProviderUnavailable, match="e3"):
        await p.call(script(*errors))
    giveup = [a for t, a in events if t == "retry.giveup"]
    assert giveup[0]["reason"] == "max_attempts" and giveup[0]["attempt"] == 4


async def test_not_retryable_fails_at_once() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    with pytest.raises(BadRequest):
        await p.call(script(BadRequest("no", status_code=400)))
    assert clock.sleeps == []
    assert [a["reason"] for t, a in events if t == "retry.giveup"] == ["not_retryable"]


async def test_retry_after_is_honoured() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    fn = script(RateLimited("slow down", status_code=429, headers={"retry-after": "7"}), "ok")
    assert await p.call(fn) == "ok"
    assert clock.sleeps == [7]
    (wait,) = [a for t, a in events if t == "retry.wait"]
    assert wait["reason"] == "retry_after" and wait["retry_after"] == 7 and wait["backoff"] == 1


async def test_backoff_longer_than_retry_after_wins() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, retry=RetryPolicy(base_delay=5, jitter=False))
    assert await p.call(script(RateLimited("x", retry_after=0.5), "ok")) == "ok"
    assert clock.sleeps == [5]


async def test_retry_after_beyond_cap_fails_fast_instead_of_sleeping() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events)
    err = RateLimited("quota", status_code=429, headers={"retry-after": "3600"})
    with pytest.raises(RetryAfterTooLong) as info:
        await p.call(script(err))
    assert info.value.retry_after == 3600 and info.value.limit == 60
    assert info.value.__cause__ is err
    assert clock.sleeps == []
    assert [a["reason"] for t, a in events if t == "retry.giveup"] == ["retry_after_too_long"]


async def test_max_elapsed_stops_retrying() -> None:
    clock, events = FakeClock(), []
    policy = RetryPolicy(max_attempts=10, base_delay=4, jitter=False, max_elapsed=10)
    p = make(clock, events, retry=policy)
    errors = [ConnectionError(str(i)) for i in range(10)]
    with pytest.raises(ConnectionError, match="1"):
        await p.call(script(*errors))
    assert clock.sleeps == [4]  # 4 + 8 would pass 10s since the first attempt
    assert [a["reason"] for t, a in events if t == "retry.giveup"] == ["max_elapsed"]


async def test_retry_on_result_and_last_result_returned() -> None:
    clock, events = FakeClock(), []
    p = make(
        clock,
        events,
        retry=RetryPolicy(max_attempts=2, base_delay=1, jitter=False),
        classifier=Classifier(retry_on_result=lambda r: r == ""),
    )
    assert await p.call(script("", "hello")) == "hello"
    assert await p.call(script("", "")) == ""
    outcomes = [a["outcome"] for t, a in events if t == "retry.attempt"]
    assert outcomes == ["retryable_result", "success", "retryable_result", "retryable_result"]


async def test_jittered_waits_stay_under_the_ceiling() -> None:
    clock, events = FakeClock(), []
    p = make(
        clock,
        events,
        rng=random.Random(3).random,
        retry=RetryPolicy(max_attempts=6, base_delay=1, max_delay=5, max_elapsed=None),
    )
    with pytest.raises(ConnectionError):
        await p.call(script(*[ConnectionError() for _ in range(6)]))
    assert len(clock.sleeps) == 5
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0 <= slept <= min(5, 2 ** (n - 1))


async def test_attempt_timeout_is_retried() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, timeout=5)
    calls = 0

    async def fn(a: Attempt) -> str:
        nonlocal calls
        calls += 1
        assert a.deadline == clock.now() + 5
        if calls == 1:
            await asyncio.Event().wait()  # hangs
        return "ok"

    assert await p.call(fn) == "ok"
    first = next(a for t, a in events if t == "retry.attempt")
    assert first["error_type"] == "AttemptTimeout" and first["retryable"] is True
    assert clock.monotonic() == 5 + 1


async def test_attempt_timeout_exhausted() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, timeout=2, retry=RetryPolicy(max_attempts=2, base_delay=0))

    async def hang(a: Attempt) -> str:
        await clock.sleep(100)
        return "never"

    with pytest.raises(AttemptTimeout):
        await p.call(hang)


async def test_never_sleeps_past_the_deadline() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, retry=RetryPolicy(base_delay=10, jitter=False, max_elapsed=None))
    fn = script(ConnectionError("reset"), "ok")
    with pytest.raises(DeadlineExceeded) as info:
        async with deadline(5, clock=clock):
            await p.call(fn)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert clock.sleeps == []  # gave up at once rather than sleep 10s past a 5s deadline
    assert [a["reason"] for t, a in events if t == "retry.giveup"] == ["deadline"]


async def test_deadline_cancels_a_hanging_attempt_and_is_not_retried() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, timeout=30)

    async def hang(a: Attempt) -> str:
        assert a.deadline == clock.now() + 3  # the turn is tighter than the attempt timeout
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(DeadlineExceeded):
        async with deadline(3, clock=clock):
            await p.call(hang)
    assert clock.monotonic() == 3
    (attempt,) = [a for t, a in events if t == "retry.attempt"]
    assert attempt["outcome"] in ("cancelled", "error")


async def test_breaker_opens_and_pipeline_fails_fast() -> None:
    clock, events = FakeClock(), []
    br = CircuitBreaker("llm", window_size=10, minimum_calls=4, clock=clock)
    p = make(clock, events, breaker=br, retry=RetryPolicy(max_attempts=3, base_delay=0))
    with pytest.raises(ConnectionError):
        await p.call(script(ConnectionError(), ConnectionError(), ConnectionError()))
    with pytest.raises(BreakerOpen):  # opens on the 4th failure, before the retry
        await p.call(script(ConnectionError(), "not reached"))
    assert br.state == OPEN
    with pytest.raises(BreakerOpen):
        await p.call(script("not called"))
    types = [t for t, _ in events]
    assert "breaker.transition" in types and "breaker.rejected" in types  # one shared sink
    assert [a["reason"] for t, a in events if t == "retry.giveup"][-1] == "breaker_open"


async def test_caller_errors_do_not_trip_the_breaker() -> None:
    clock, events = FakeClock(), []
    br = CircuitBreaker("llm", window_size=10, minimum_calls=2, clock=clock)
    p = make(clock, events, breaker=br)
    for _ in range(10):
        with pytest.raises(BadRequest):
            await p.call(script(BadRequest("bad", status_code=400)))
    assert br.state == "closed"


async def test_hedging_inside_the_pipeline() -> None:
    clock, events = FakeClock(), []
    budget = RetryBudget(clock=clock)
    p = make(clock, events, hedge=HedgePolicy(delay=1), budget=budget)

    async def fn(a: Attempt) -> str:
        await clock.sleep(5 if a.hedge == 0 else 1)
        return f"hedge {a.hedge}"

    assert await p.call(fn) == "hedge 1"
    assert "hedge.fired" in [t for t, _ in events]


async def test_fallback_around_the_pipeline() -> None:
    clock, events = FakeClock(), []
    p = make(clock, events, retry=RetryPolicy(max_attempts=2, base_delay=0))
    chain: FallbackChain[str] = FallbackChain(degrade("unavailable"))
    result = await p.call(script(ConnectionError(), ConnectionError()), fallback=chain)
    assert result == "unavailable"


async def test_event_sink_errors_do_not_break_calls() -> None:
    def broken(t: str, a: dict[str, Any]) -> None:
        raise RuntimeError("sink down")

    p = ResiliencePipeline("llm", clock=FakeClock(), on_event=broken)
    assert await p.call(script("ok")) == "ok"


# ---- journaled attempts ------------------------------------------------------------


async def test_crash_mid_backoff_resumes_attempt_count_and_remaining_delay() -> None:
    clock, events = FakeClock(), []
    journal = InMemoryAttemptJournal()
    policy = RetryPolicy(max_attempts=5, base_delay=10, jitter=False, max_elapsed=None)
    p1 = make(clock, events, retry=policy)
    t0 = clock.now()

    async def flaky(a: Attempt) -> str:
        raise ProviderUnavailable("503", status_code=503)

    task = asyncio.create_task(p1.call(flaky, journal=journal))
    # Attempt 1 fails at t=0, waits 10 (until t=10); attempt 2 fails at t=10, waits 20.
    await clock.sleep(15)  # crash 5s into the second wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.state == AttemptState(attempt=2, next_attempt_at=t0 + 30, first_attempt_at=t0)

    # A new process, a new pipeline, the same journal.
    events2: Events = []
    p2 = make(clock, events2, retry=policy)
    seen: list[int] = []

    async def recovered(a: Attempt) -> str:
        seen.append(a.number)
        return "ok"

    sleeps_before = len(clock.sleeps)
    assert await p2.call(recovered, journal=journal) == "ok"
    assert seen == [3]  # not 1: the count survived the crash
    assert clock.sleeps[sleeps_before:] == [15]  # only what was left of the 20s wait
    assert clock.now() == t0 + 30
    (wait,) = [a for t, a in events2 if t == "retry.wait"]
    assert wait["reason"] == "resume" and wait["delay"] == 15 and wait["next_attempt"] == 3


async def test_resume_after_the_due_time_does_not_sleep() -> None:
    clock, events = FakeClock(), []
    journal = InMemoryAttemptJournal(AttemptState(2, clock.now() - 1, clock.now() - 5))
    p = make(clock, events)
    fn = script("ok")
    assert await p.call(fn, journal=journal) == "ok"
    assert fn.seen[0].number == 3 and clock.sleeps == []


async def test_resume_respects_max_attempts_and_max_elapsed() -> None:
    clock, events = FakeClock(), []
    policy = RetryPolicy(max_attempts=3, base_delay=1, jitter=False, max_elapsed=None)
    journal = InMemoryAttemptJournal(AttemptState(2, None, clock.now()))
    p = make(clock, events, retry=policy)
    with pytest.raises(ConnectionError):
        await p.call(script(ConnectionError()), journal=journal)  # attempt 3 was the last
    assert [a["reason"] for t, a in events if t == "retry.giveup"] == ["max_attempts"]


async def test_resume_that_would_cross_the_deadline_gives_up() -> None:
    clock, events = FakeClock(), []
    journal = InMemoryAttemptJournal(AttemptState(1, clock.now() + 30, clock.now()))
    p = make(clock, events)
    with pytest.raises(DeadlineExceeded):
        async with deadline(10, clock=clock):
            await p.call(script("ok"), journal=journal)
    assert clock.sleeps == []


async def test_journal_state_round_trips_as_json() -> None:
    s = AttemptState(3, 123.5, 100.0)
    assert AttemptState.from_json(s.to_json()) == s
    assert AttemptState.from_json({"attempt": 1, "first_attempt_at": 1}).next_attempt_at is None


async def test_standard_pipeline_has_everything_on() -> None:
    p = ResiliencePipeline.standard("llm", clock=FakeClock())
    assert p.budget is not None and p.breaker is not None
    assert p.retry == RetryPolicy()
    assert await p.call(script("ok")) == "ok"
