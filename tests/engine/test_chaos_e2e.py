"""The demo agent over real HTTP against the chaos LLM server, with faults on.

Both wire protocols, real adapters, real retries: every turn must end well, each booking
and email must happen once, and the faults must show in the traces.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrion import Orchestrion, RetryPolicy
from orchestrion.chaos.testing import chaos_log, running_chaos_server
from orchestrion.demo.support import support_agent
from orchestrion.models.resolve import resolve_model

FAULTS = [
    {"fault": "rate_limit", "at": [1], "retry_after": 0.05, "retry_after_format": "ms"},
    {"fault": "server_error", "at": [3]},
    {"fault": "truncated_stream", "at": [5]},
    {"fault": "malformed_tool_args", "at": [6], "variant": "trailing_comma"},
    {"fault": "connection_reset", "at": [8]},
    {"fault": "midstream_error", "at": [10]},
    {"fault": "overloaded", "at": [12]},
    {"fault": "malformed_json", "at": [14]},
    {"fault": "rate_limit", "at": [16], "retry_after": 0.05},
]
PLAN = {"seed": 7, "script": "orchestrion.demo.support:support_script", "faults": FAULTS}
QUICK_RETRIES = RetryPolicy(max_attempts=5, base_delay=0.02, max_delay=0.2, max_elapsed=30)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_demo_turns_over_http_survive_the_chaos_server(db_path: Path, protocol: str) -> None:
    with running_chaos_server(PLAN) as base_url:
        base = f"{base_url}/v1" if protocol == "openai" else base_url
        model = resolve_model(f"{protocol}:chaos-model", api_key="test-key", base_url=base)
        agent = support_agent(model=model)
        agent.retry = QUICK_RETRIES
        messages = [
            "Hi, I'm customer 42. Please move my appointment to Friday 10:00.",
            "I'm customer 7, move me to Monday 15:30 please.",
            "Customer 42 again: make it Thursday 09:00.",
        ]
        async with Orchestrion(f"sqlite:///{db_path}", agents=[agent]) as orx:
            results = [await orx.send("support", m, conversation=f"c-{i % 2}")
                       for i, m in enumerate(messages)]
            log = chaos_log(base_url)

            assert [r.status for r in results] == ["succeeded"] * 3, [r.error for r in results]
            assert all("All set" in r.answer for r in results)
            injected = {e["fault"] for e in log["entries"] if e.get("fault")}
            assert {"rate_limit", "server_error", "truncated_stream", "connection_reset",
                    "midstream_error"} <= injected, log["counts"]

            for r in results:
                effects = await orx.store.list_effects()
                mine = [e for e in effects if e.run_id == r.run_id]
                assert sorted(e.kind for e in mine) == ["booking", "email"]
            slots = sorted(e.payload["slot"] for e in await orx.store.list_effects(kind="booking"))
            assert slots == ["Friday 10:00", "Monday 15:30", "Thursday 09:00"]

            retries = []
            for r in results:
                events = await orx.store.read_events(r.run_id)
                retries += [e for e in events if e.type == "retry.wait"]
                roots = await orx.trace(r.run_id)
                assert len(roots) == 1 and all(s.complete for s in roots[0].walk())
            assert len(retries) >= 5
            assert {"retry_after", "backoff"} <= {w.attributes["reason"] for w in retries}
