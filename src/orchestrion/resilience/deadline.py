"""Deadlines and timeouts as structure (after Trio's cancel scopes).

    async with deadline(60):              # the whole turn: DeadlineExceeded when it passes
        async with timeout(20, name="step:search"):   # one step: StepTimeout
            await pipeline.call(fn)       # per-attempt timeout inside: AttemptTimeout

Each scope's limit is the minimum of its own and every enclosing one; the tightest limit
travels in a contextvar (so child tasks inherit it) as an absolute wall-clock time
(`current_deadline()`, the value ModelRequest.deadline and ToolContext.deadline expect).
When the limit passes, the task inside the scope is cancelled and the scope raises the
error of whichever scope set the limit: an enclosing turn deadline surfaces as
DeadlineExceeded even from inside a step or an attempt. Every scope arms its own timer, so
a child task inherits not only the number but the enforcement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType

from orchestrion.errors import DeadlineExceeded
from orchestrion.resilience.clock import SYSTEM_CLOCK, Clock, SystemClock
from orchestrion.resilience.errors import StepTimeout

ErrorFactory = Callable[[str, float], BaseException]


def _deadline_error(name: str, seconds: float) -> BaseException:
    return DeadlineExceeded(f"{name!r}: deadline of {seconds:g}s passed")


class Bound:
    """The tightest limit in force: absolute wall time plus the error to raise at it."""

    __slots__ = ("at", "factory", "name", "seconds")

    def __init__(self, at: float, name: str, seconds: float, factory: ErrorFactory) -> None:
        self.at = at
        self.name = name
        self.seconds = seconds
        self.factory = factory

    def error(self) -> BaseException:
        return self.factory(self.name, self.seconds)


_CURRENT: ContextVar[Bound | None] = ContextVar("orchestrion_deadline", default=None)


def current_bound() -> Bound | None:
    return _CURRENT.get()


def current_deadline() -> float | None:
    """The tightest enclosing limit as a time.time() value, or None when unbounded."""
    b = _CURRENT.get()
    return None if b is None else b.at


def remaining(clock: Clock = SYSTEM_CLOCK) -> float | None:
    """Seconds left before the tightest enclosing limit (never negative), or None."""
    b = _CURRENT.get()
    return None if b is None else max(0.0, b.at - clock.now())


def check_deadline(clock: Clock = SYSTEM_CLOCK) -> None:
    """Raise the enclosing limit's error if it has already passed."""
    b = _CURRENT.get()
    if b is not None and clock.now() >= b.at:
        raise b.error()


class Scope:
    """An async context manager that bounds its body. Build it with deadline()/timeout()."""

    __slots__ = (
        "_bound",
        "_cancelling",
        "_clock",
        "_fired",
        "_handle",
        "_own",
        "_task",
        "_token",
        "_watcher",
    )

    def __init__(self, own: Bound | None, clock: Clock) -> None:
        self._own = own
        self._clock = clock
        self._bound: Bound | None = None
        self._token: Token[Bound | None] | None = None
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._fired = False
        self._cancelling = 0

    @property
    def bound(self) -> Bound | None:
        """The limit in force inside this scope (its own or a tighter enclosing one)."""
        return self._bound

    @property
    def expired(self) -> bool:
        return self._fired

    async def __aenter__(self) -> Scope:
        parent = _CURRENT.get()
        own = self._own
        tighter = own is not None and (parent is None or own.at < parent.at)
        bound = own if tighter else parent
        self._bound = bound
        if bound is None:
            return self
        delay = bound.at - self._clock.now()
        if delay <= 0:
            raise bound.error()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            raise RuntimeError("deadline scopes need a running asyncio task")
        self._task = task
        self._cancelling = task.cancelling()
        if tighter:
            self._token = _CURRENT.set(bound)
        if isinstance(self._clock, SystemClock):
            self._handle = asyncio.get_running_loop().call_later(delay, self._fire)
        else:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(delay))
        return self

    async def _watch(self, delay: float) -> None:
        await self._clock.sleep(delay)
        self._fire()

    def _fire(self) -> None:
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None
        if self._fired:
            assert self._task is not None and self._bound is not None
            left = self._task.uncancel()
            if exc_type is asyncio.CancelledError and left <= self._cancelling:
                raise self._bound.error() from None
        return None


def deadline(
    seconds: float | None = None,
    *,
    at: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
    name: str = "turn",
) -> Scope:
    """A deadline `seconds` from now (or absolute `at`, a time.time() value); raises
    DeadlineExceeded when it passes. Both None: inherit the enclosing limit (and enforce it
    in this task)."""
    if at is None and seconds is None:
        return Scope(None, clock)
    now = clock.now()
    limit = at if at is not None else now + (seconds or 0.0)
    total = seconds if seconds is not None else max(0.0, limit - now)
    return Scope(Bound(limit, name, total, _deadline_error), clock)


def timeout(
    seconds: float | None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    name: str = "step",
    error: ErrorFactory = StepTimeout,
) -> Scope:
    """A relative timeout that raises `error(name, seconds)` (StepTimeout by default) unless
    an enclosing limit is tighter, whose own error then wins. None: inherit only."""
    if seconds is None:
        return Scope(None, clock)
    return Scope(Bound(clock.now() + seconds, name, seconds, error), clock)
