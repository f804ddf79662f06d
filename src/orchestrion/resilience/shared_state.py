"""A breaker's shared state in the orchestrion store (the `breakers` table), so every
process on that store sees one breaker, and it survives restarts."""

from __future__ import annotations

from typing import Any

from orchestrion.store.base import Store


class StoreBreakerState:
    """A BreakerStateStore over `Store.breaker_load` / `Store.breaker_save_if`."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self, name: str) -> tuple[dict[str, Any] | None, int]:
        return await self.store.breaker_load(name)

    async def save_if(self, name: str, version: int, state: dict[str, Any]) -> bool:
        return await self.store.breaker_save_if(name, version, state)


__all__ = ["StoreBreakerState"]
