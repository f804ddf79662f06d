import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrion.resilience import RetryPolicy


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1000),
    mult=st.floats(min_value=1, max_value=10),
    u=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_capped_ceiling(
    attempt: int, base: float, cap: float, mult: float, u: float
) -> None:
    p = RetryPolicy(base_delay=base, max_delay=cap, multiplier=mult)
    ceiling = p.ceiling(attempt)
    assert 0 <= ceiling <= cap
    try:
        uncapped = base * mult ** (attempt - 1)
    except OverflowError:
        uncapped = float("inf")
    assert ceiling == min(cap, uncapped) or (base == 0 and ceiling == 0)
    delay = p.backoff(attempt, lambda: u)
    assert 0 <= delay <= ceiling


@given(attempt=st.integers(min_value=1, max_value=60))
def test_ceiling_grows_monotonically_until_cap(attempt: int) -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=30)
    assert p.ceiling(attempt) <= p.ceiling(attempt + 1)
    assert p.ceiling(attempt + 1) == min(30, 0.5 * 2**attempt)


def test_exact_ceilings_without_jitter() -> None:
    p = RetryPolicy(base_delay=1, max_delay=10, jitter=False)
    assert [p.backoff(n, random.random) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_jitter_actually_spreads() -> None:
    p = RetryPolicy(base_delay=1, max_delay=100)
    rng = random.Random(7)
    delays = {round(p.backoff(5, rng.random), 6) for _ in range(50)}
    assert len(delays) > 40
    assert max(delays) <= 16


def test_huge_attempt_numbers_do_not_overflow() -> None:
    p = RetryPolicy(base_delay=1, max_delay=30, multiplier=10)
    assert p.ceiling(10**6) == 30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": -1},
        {"max_delay": float("inf")},
        {"multiplier": 0.5},
        {"max_retry_after": float("nan")},
        {"max_elapsed": -1},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
