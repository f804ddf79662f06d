"""An agent for fleet tests: the demo support agent, slowed down so a worker can be killed,
stopped or cut off from the database in the middle of a turn. Loaded by workers with
`orchestrion worker --app tests.fleet.agents:slow` (PYTHONPATH at the repository)."""

from __future__ import annotations

import os

from orchestrion.demo.support import make_tools, support_script
from orchestrion.engine.agent import Agent
from orchestrion.models.scripted import ScriptedModel

LATENCY = float(os.environ.get("ORCHESTRION_FLEET_LATENCY", "0.3"))

slow = Agent(
    name="slow",
    model=ScriptedModel(support_script, name="scripted-slow", latency=LATENCY),
    tools=make_tools(tool_latency=LATENCY / 2),
    instructions="You are a concise, friendly customer-support agent. Use the tools.",
)

# The same agent on a queue of its own, at most 2 of its runs running at once in the fleet.
limited = Agent(
    name="limited",
    model=ScriptedModel(support_script, name="scripted-limited", latency=LATENCY),
    tools=make_tools(tool_latency=LATENCY / 2),
    instructions="You are a concise, friendly customer-support agent. Use the tools.",
    max_concurrent_runs=2,
)

# Both queues, for workers that serve them side by side.
both = [slow, limited]
