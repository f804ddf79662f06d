"""Small agents and models for engine tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from orchestrion import Agent, ScriptedModel, ToolContext, call, calls, say, tool
from orchestrion.models.messages import ModelDelta, ModelRequest


class Crash(BaseException):
    """Simulates the process dying: not an Exception, so nothing records or handles it."""


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def hit(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1


def weather_agent(counter: Counter, *, crash_in: str | None = None, **kwargs: Any) -> Agent:
    """Two rounds of tools (one lookup, then two concurrent writes), then an answer."""

    @tool
    async def lookup(city: str) -> dict[str, Any]:
        """Look up the weather."""
        counter.hit("lookup")
        if crash_in == "lookup":
            raise Crash
        return {"city": city, "sky": "sunny"}

    @tool(effect="write")
    async def notify(who: str, ctx: ToolContext) -> str:
        """Notify someone."""
        counter.hit("notify")
        await ctx.record_effect("notify", {"who": who})
        if crash_in == "notify":
            raise Crash
        return f"notified {who}"

    @tool(effect="write")
    async def log_it(text: str, ctx: ToolContext) -> str:
        """Write a log line."""
        counter.hit("log_it")
        await ctx.record_effect("log", {"text": text})
        return "logged"

    model = ScriptedModel(
        [
            call("lookup", "Checking.", city="Paris"),
            calls(call("notify", who="ada"), call("log_it", text="paris sunny")),
            say("It is sunny in Paris; Ada knows."),
        ],
        name="weather-model",
    )
    return Agent("weather", model=model, tools=[lookup, notify, log_it], **kwargs)


class GatedModel:
    """A model whose calls wait for a gate: lets a test act while a step is in flight."""

    def __init__(self, inner: ScriptedModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.entered.set()
        await self.gate.wait()
        async for delta in self.inner.stream(request):
            yield delta
