"""Fallback chain: when the primary fails for good, try the next option in order: another
callable (another model), a cached answer, a degradation message. Each option gets the
error that led to it. The user sees an answer, never a raw provider error, unless every
option failed (AllFallbacksFailed, which carries all the errors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from orchestrion.resilience.errors import AllFallbacksFailed, ResilienceError

log = logging.getLogger("orchestrion.resilience")

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]


class NoCachedAnswer(ResilienceError):
    """A cache fallback had nothing for this call; the chain moves on."""


class Fallback(Generic[T]):
    """One option of a chain: a name (for traces) and an async function of the error."""

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn: Callable[[BaseException], Awaitable[T]]) -> None:
        self.name = name
        self.fn = fn


def alternative(fn: Callable[[], Awaitable[T]], *, name: str = "alternative") -> Fallback[T]:
    """Another callable: typically the same request through another model's pipeline."""

    async def run(_: BaseException) -> T:
        return await fn()

    return Fallback(name, run)


def cached(lookup: Callable[[], Awaitable[T | None]], *, name: str = "cache") -> Fallback[T]:
    """A cached answer; a miss (None) passes to the next option."""

    async def run(_: BaseException) -> T:
        value = await lookup()
        if value is None:
            raise NoCachedAnswer(f"{name}: no cached answer")
        return value

    return Fallback(name, run)


def degrade(value: T, *, name: str = "degraded") -> Fallback[T]:
    """A fixed degradation answer (e.g. "The assistant is unavailable, try again soon")."""

    async def run(_: BaseException) -> T:
        return value

    return Fallback(name, run)


class FallbackChain(Generic[T]):
    """`handles` decides which primary errors fall back (default: every Exception;
    cancellation never does). Options' own failures always move on to the next option."""

    def __init__(
        self,
        *options: Fallback[T],
        name: str = "fallback",
        handles: tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (Exception,),
        on_event: EventSink | None = None,
    ) -> None:
        if not options:
            raise ValueError("a fallback chain needs at least one option")
        self.options = options
        self.name = name
        self.handles = handles
        self.on_event = on_event

    def _handled(self, exc: BaseException) -> bool:
        if isinstance(exc, asyncio.CancelledError):
            return False
        if isinstance(self.handles, tuple):
            return isinstance(exc, self.handles)
        return self.handles(exc)

    def _emit(self, type_: str, attrs: dict[str, Any]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(type_, attrs)
            except Exception:
                log.exception("on_event sink failed for %s", type_)

    async def call(self, primary: Callable[[], Awaitable[T]]) -> T:
        try:
            return await primary()
        except Exception as exc:
            if not self._handled(exc):
                raise
            error: BaseException = exc
        errors: list[BaseException] = [error]
        for index, option in enumerate(self.options):
            self._emit(
                "fallback.used",
                {
                    "chain": self.name,
                    "option": option.name,
                    "index": index,
                    "error_type": type(error).__name__,
                    "error": str(error),
                },
            )
            try:
                return await option.fn(error)
            except Exception as exc:
                self._emit(
                    "fallback.failed",
                    {
                        "chain": self.name,
                        "option": option.name,
                        "index": index,
                        "error_type": type(exc).__name__,
                        "error": str(exc),
                    },
                )
                errors.append(exc)
                error = exc
        raise AllFallbacksFailed(self.name, errors) from error
