from typing import Any

import pytest

from orchestrion.errors import BadRequest, ProviderUnavailable
from orchestrion.resilience import (
    AllFallbacksFailed,
    FallbackChain,
    alternative,
    cached,
    degrade,
)

Events = list[tuple[str, dict[str, Any]]]


async def failing() -> str:
    raise ProviderUnavailable("down", status_code=503)


async def test_primary_success_skips_fallbacks() -> None:
    events: Events = []
    chain: FallbackChain[str] = FallbackChain(
        degrade("sorry"), on_event=lambda t, a: events.append((t, a))
    )

    async def ok() -> str:
        return "answer"

    assert await chain.call(ok) == "answer"
    assert events == []


async def test_chain_moves_through_model_cache_and_degradation() -> None:
    events: Events = []
    cache: dict[str, str] = {}

    async def other_model() -> str:
        raise ProviderUnavailable("also down")

    async def lookup() -> str | None:
        return cache.get("q")

    chain: FallbackChain[str] = FallbackChain(
        alternative(other_model, name="model-b"),
        cached(lookup),
        degrade("The assistant is unavailable right now."),
        name="answer",
        on_event=lambda t, a: events.append((t, a)),
    )
    assert await chain.call(failing) == "The assistant is unavailable right now."
    used = [a["option"] for t, a in events if t == "fallback.used"]
    failed = [a["option"] for t, a in events if t == "fallback.failed"]
    assert used == ["model-b", "cache", "degraded"]
    assert failed == ["model-b", "cache"]
    first = next(a for t, a in events if t == "fallback.used")
    assert first["error_type"] == "ProviderUnavailable" and first["chain"] == "answer"

    cache["q"] = "cached answer"
    assert await chain.call(failing) == "cached answer"


async def test_option_gets_the_error() -> None:
    from orchestrion.resilience import Fallback

    async def explain(exc: BaseException) -> str:
        return f"fallback after {type(exc).__name__}"

    chain: FallbackChain[str] = FallbackChain(Fallback("explain", explain))
    assert await chain.call(failing) == "fallback after ProviderUnavailable"


async def test_all_failed_carries_every_error() -> None:
    async def other() -> str:
        raise RuntimeError("b")

    chain: FallbackChain[str] = FallbackChain(alternative(other))
    with pytest.raises(AllFallbacksFailed) as info:
        await chain.call(failing)
    assert [type(e) for e in info.value.errors] == [ProviderUnavailable, RuntimeError]


async def test_unhandled_errors_propagate() -> None:
    chain: FallbackChain[str] = FallbackChain(
        degrade("x"), handles=lambda e: not isinstance(e, BadRequest)
    )

    async def bad() -> str:
        raise BadRequest("your prompt is wrong")

    with pytest.raises(BadRequest):
        await chain.call(bad)
    assert await chain.call(failing) == "x"


def test_empty_chain_refused() -> None:
    with pytest.raises(ValueError):
        FallbackChain()
