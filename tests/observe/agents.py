"""Agents for the OpenTelemetry tests, importable by worker processes too
(`orchestrion worker --app tests.observe.agents:weather`, PYTHONPATH at the repository).

`lookup` waits $OTEL_TEST_TOOL_HOLD seconds (default 0), so a test can kill the process
executing it."""

from __future__ import annotations

import asyncio
import logging
import os

from orchestrion import Agent, ScriptedModel, ToolContext, call, say, tool

USER_SECRET = "my card number is 4111 1111 1111 1111"  # content that must not leak
TOOL_RESULT = "sunny, 24 degrees"
ANSWER = "It is sunny and 24 degrees in Paris."

log = logging.getLogger("tests.observe.tool")


@tool(effect="write", retry=None)
async def lookup(city: str, ctx: ToolContext) -> str:
    """Look up the weather of a city."""
    log.warning("looking up the weather", extra={"city_length": len(city), "text": city})
    await ctx.record_effect("lookup", {"city": city})
    await asyncio.sleep(float(os.environ.get("OTEL_TEST_TOOL_HOLD", "0")))
    return TOOL_RESULT


def weather_agent() -> Agent:
    return Agent(
        "weather",
        model=ScriptedModel(
            [call("lookup", "Checking the sky.", city="Paris"), say(ANSWER)],
            name="scripted-weather",
            chunk_size=8,
        ),
        tools=[lookup],
        instructions="Answer weather questions with the lookup tool.",
    )


weather = weather_agent()
