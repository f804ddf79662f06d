import pytest

from orchestrion.errors import ProviderUnavailable
from orchestrion.resilience import (
    Attempt,
    FakeClock,
    ResiliencePipeline,
    RetryBudget,
    RetryBudgetExhausted,
    RetryPolicy,
)


def test_floor_allows_retries_without_traffic() -> None:
    clock = FakeClock()
    b = RetryBudget(percent=0.2, min_retries_per_sec=1, ttl=10, clock=clock)
    granted = sum(b.try_withdraw() for _ in range(50))
    assert granted == 10  # 1/s * 10s


def test_percent_of_calls_on_top_of_floor() -> None:
    clock = FakeClock()
    b = RetryBudget(percent=0.2, min_retries_per_sec=0, ttl=10, clock=clock)
    for _ in range(100):
        b.deposit()
    granted = sum(b.try_withdraw() for _ in range(100))
    assert granted == 20


def test_window_expires_old_withdrawals_and_deposits() -> None:
    clock = FakeClock()
    b = RetryBudget(percent=0.0, min_retries_per_sec=1, ttl=10, clock=clock)
    assert sum(b.try_withdraw() for _ in range(20)) == 10
    assert not b.try_withdraw()
    clock.advance(5)
    assert not b.try_withdraw()  # the withdrawals are still inside the window
    clock.advance(5.01)
    assert sum(b.try_withdraw() for _ in range(20)) == 10


def test_refused_withdrawal_takes_nothing() -> None:
    clock = FakeClock()
    b = RetryBudget(percent=0.5, min_retries_per_sec=0, ttl=10, clock=clock)
    b.deposit()
    assert b.balance() == 0.5
    assert not b.try_withdraw()
    b.deposit()
    assert b.try_withdraw()
    assert b.balance() == 0.0


def test_invalid_budget() -> None:
    with pytest.raises(ValueError):
        RetryBudget(ttl=0)


async def test_brownout_does_not_become_a_retry_storm() -> None:
    """Every call fails retryably; 10 attempts allowed. Retries stay <= 20% + floor."""
    clock = FakeClock()
    budget = RetryBudget(percent=0.2, min_retries_per_sec=1, ttl=10, clock=clock)
    events: list[tuple[str, dict[str, object]]] = []
    pipeline = ResiliencePipeline(
        "llm",
        retry=RetryPolicy(max_attempts=10, base_delay=0, max_elapsed=None),
        budget=budget,
        clock=clock,
        on_event=lambda t, a: events.append((t, a)),
    )
    attempts = 0

    async def always_503(a: Attempt) -> str:
        nonlocal attempts
        attempts += 1
        raise ProviderUnavailable("overloaded", status_code=503)

    calls = 500
    exhausted = 0
    for _ in range(calls):  # all inside one budget window (no time passes)
        try:
            await pipeline.call(always_503)
        except RetryBudgetExhausted as exc:
            exhausted += 1
            assert isinstance(exc.last_error, ProviderUnavailable)
        except ProviderUnavailable:
            pass
    retries = attempts - calls
    assert retries <= 0.2 * calls + 1 * 10
    assert retries >= 0.2 * calls  # and the budget is actually used, not starved
    assert exhausted > calls * 0.7
    refused = [a for t, a in events if t == "budget.refused"]
    assert len(refused) == exhausted
    giveups = [a for t, a in events if t == "retry.giveup" and a["reason"] == "budget"]
    assert len(giveups) == exhausted
