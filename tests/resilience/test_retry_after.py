import email.utils

import pytest

from orchestrion.errors import RateLimited
from orchestrion.resilience import (
    MAX_RETRY_AFTER,
    parse_retry_after,
    parse_retry_after_ms,
    retry_after_from_error,
    retry_after_from_headers,
)

NOW = 1_700_000_000.0


def test_seconds_form() -> None:
    assert parse_retry_after("120", now=NOW) == 120.0
    assert parse_retry_after(" 1.5 ", now=NOW) == 1.5
    assert parse_retry_after("0", now=NOW) == 0.0


def test_ms_form() -> None:
    assert parse_retry_after_ms("1500") == 1.5
    assert parse_retry_after_ms("20") == 0.02


def test_http_date_form() -> None:
    date = email.utils.formatdate(NOW + 42, usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(42.0)


def test_http_date_in_the_past_means_now() -> None:
    date = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after(date, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "-5",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e3",
        "soon",
        "",
        "   ",
        "12abc",
        "0x10",
        "+3",
        "Wed, 99 Foo 2015 07:28:00 GMT",
        "5 seconds",
    ],
)
def test_garbage_is_ignored(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None
    assert parse_retry_after_ms(value) is None


def test_huge_values_are_clamped_but_kept_huge() -> None:
    assert parse_retry_after("99999999999", now=NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("9" * 400, now=NOW) == MAX_RETRY_AFTER  # overflows float
    far = email.utils.formatdate(NOW + 10 * 365 * 86400, usegmt=True)
    assert parse_retry_after(far, now=NOW) == MAX_RETRY_AFTER


def test_absent() -> None:
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after_ms(None) is None
    assert retry_after_from_headers(None, now=NOW) is None
    assert retry_after_from_headers({"x-other": "1"}, now=NOW) is None


def test_ms_header_wins_and_case_is_ignored() -> None:
    headers = {"Retry-After": "10", "Retry-After-Ms": "250"}
    assert retry_after_from_headers(headers, now=NOW) == 0.25


def test_garbage_ms_header_falls_back_to_seconds() -> None:
    headers = {"retry-after-ms": "-1", "retry-after": "3"}
    assert retry_after_from_headers(headers, now=NOW) == 3.0


def test_from_error_attribute_then_headers() -> None:
    assert retry_after_from_error(RateLimited("slow", retry_after=7.0), now=NOW) == 7.0
    err = RateLimited("slow", headers={"retry-after": "4"})
    assert retry_after_from_error(err, now=NOW) == 4.0
    bad = RateLimited("slow", retry_after=float("nan"), headers={"retry-after": "2"})
    assert retry_after_from_error(bad, now=NOW) == 2.0
    neg = RateLimited("slow", retry_after=-3.0)
    assert retry_after_from_error(neg, now=NOW) is None


def test_from_error_response_headers() -> None:
    class Response:
        headers = {"retry-after-ms": "1200"}

    class SdkError(Exception):
        response = Response()

    assert retry_after_from_error(SdkError(), now=NOW) == 1.2
    assert retry_after_from_error(ValueError("x"), now=NOW) is None
