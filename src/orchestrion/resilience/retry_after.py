"""Read how long a dependency asked us to wait: retry-after-ms, retry-after in seconds, or
retry-after as an HTTP date.

Garbage (signs, words, NaN, infinities, exponents) is ignored: the caller falls back to
its own backoff. A date in the past means "now" (0.0). Enormous values are returned
clamped to MAX_RETRY_AFTER so the retry policy can refuse them loudly instead of sleeping.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 365.0 * 86400.0  # one year: far beyond any sane cap, still finite

# RFC 9110 says delay-seconds is digits only; providers also send decimals ("1.5").
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*\Z", re.ASCII)


def _number(value: str) -> float | None:
    m = _NUMBER.match(value)
    if m is None:
        return None
    seconds = float(m.group(1))
    if not math.isfinite(seconds):  # a few hundred digits overflow to inf
        return MAX_RETRY_AFTER
    return min(seconds, MAX_RETRY_AFTER)


def parse_retry_after_ms(value: str | None) -> float | None:
    """`retry-after-ms: 1500` -> 1.5 (seconds). None when absent or malformed."""
    if value is None:
        return None
    ms = _number(value)
    return None if ms is None else ms / 1000.0


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """`retry-after: 120` or `retry-after: Wed, 21 Oct 2015 07:28:00 GMT` -> seconds to wait
    from `now` (a time.time() value). None when absent or malformed."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    if not any(c.isalpha() for c in value):  # "-5", "1e3", "": not a date either
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    try:
        delta = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(0.0, delta), MAX_RETRY_AFTER)


def retry_after_from_headers(headers: Mapping[str, str] | None, *, now: float) -> float | None:
    """retry-after-ms wins over retry-after (it is more precise); a malformed one is skipped."""
    if not headers:
        return None
    ms_value: str | None = None
    value: str | None = None
    for key, v in headers.items():
        k = key.lower()
        if k == "retry-after-ms":
            ms_value = v
        elif k == "retry-after":
            value = v
    seconds = parse_retry_after_ms(ms_value)
    if seconds is None:
        seconds = parse_retry_after(value, now=now)
    return seconds


def retry_after_from_error(exc: BaseException, *, now: float) -> float | None:
    """What the error says about waiting: a `retry_after` attribute (seconds, as set by
    orchestrion's ProviderError) if sane, else the headers on the error or its response."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool):
        f = float(value)
        if math.isfinite(f) and f >= 0:
            return min(f, MAX_RETRY_AFTER)
        if f == math.inf:
            return MAX_RETRY_AFTER
    headers = getattr(exc, "headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    if headers is not None and hasattr(headers, "items"):
        try:
            return retry_after_from_headers(headers, now=now)
        except Exception:  # exotic header containers: never let parsing break a retry
            return None
    return None
