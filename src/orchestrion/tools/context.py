"""What a running tool can see: its idempotency key, the time left, and a few services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrion.errors import DeadlineExceeded


@dataclass
class ToolContext:
    """Handed to a tool that declares a parameter of this type.

    `idempotency_key` is stable across retries and crash recovery of the same step: a
    tool with side effects passes it on (an Idempotency-Key header, a unique column) so a
    re-executed step does not repeat the effect.
    """

    idempotency_key: str
    run_id: str
    conversation_id: str
    tenant: str
    tool_name: str
    deadline: float | None = None  # absolute time.time(); None means no deadline
    _record_effect: Callable[[str, str, dict[str, Any]], Awaitable[bool]] | None = field(
        default=None, repr=False
    )
    _progress: Callable[[str, float | None], Awaitable[None]] | None = field(
        default=None, repr=False
    )
    # The thread of a sync tool's latest attempt (it may outlive the attempt's timeout).
    _thread: asyncio.Future[Any] | None = field(default=None, repr=False)

    def remaining(self) -> float | None:
        """Seconds left before the turn's deadline (None: unbounded)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.time())

    def check_deadline(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(f"tool {self.tool_name!r}: the turn's deadline has passed")

    async def record_effect(
        self, kind: str, payload: dict[str, Any], *, part: str | None = None
    ) -> bool:
        """Record a side effect in the store under this call's idempotency key.

        Returns True the first time, False when the same key was already recorded (the
        effect happened before a crash or retry and must not be repeated). A tool with
        several effects names each with `part` (the key becomes "KEY/part").
        """
        if self._record_effect is None:
            raise RuntimeError("this ToolContext is not attached to a store")
        key = self.idempotency_key if part is None else f"{self.idempotency_key}/{part}"
        return await self._record_effect(key, kind, payload)

    async def progress(self, message: str, fraction: float | None = None) -> None:
        """Report progress; it appears as an event in the turn's stream and trace."""
        if self._progress is not None:
            await self._progress(message, fraction)
