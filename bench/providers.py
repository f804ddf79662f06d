"""Provider adapters: time to first token and the adapter's added overhead.

Both adapters stream from the chaos server (no faults) on loopback, next to a raw httpx
request for the same body to the same server in the same run, interleaved call by call
so both see the same machine. Every call opens a fresh connection (keep-alive off for
both): on this loopback set-up a reused uvicorn connection adds a ~40 ms stall per call
(a TCP delayed-ACK interaction, the same for raw and adapter) that would drown the
difference being measured. The raw client only splits SSE lines and JSON-decodes
them: the difference is what the adapter adds (normalising deltas, errors, deadlines).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx

from orchestrion.chaos.testing import running_chaos_server
from orchestrion.models import Message, ModelRequest, TextDelta
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.anthropic import build_payload as anthropic_payload
from orchestrion.models.openai import OpenAIModel
from orchestrion.models.openai import build_payload as openai_payload

REQUEST = ModelRequest(messages=(Message.system("Be brief."), Message.user("Say hello.")))


async def _raw(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    async with client.stream("POST", url, json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            data = json.loads(line[5:])
            if not first:
                text = (
                    ((data.get("choices") or [{}])[0].get("delta") or {}).get("content")
                    if "choices" in data
                    else (data.get("delta") or {}).get("text")
                )
                if text:
                    first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def _adapter(model: OpenAIModel | AnthropicModel) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    async for delta in model.stream(REQUEST):
        if not first and isinstance(delta, TextDelta):
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def _client(limits: httpx.Limits) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=30, limits=limits, transport=httpx.AsyncHTTPTransport(retries=0, limits=limits)
    )


async def _measure(base: str, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=fresh) as client:
        for protocol in ("openai", "anthropic"):
            model: OpenAIModel | AnthropicModel
            if protocol == "openai":
                model = OpenAIModel(
                    "bench", api_key="k", base_url=f"{base}/v1", client=_client(fresh)
                )
                url, body = f"{base}/v1/chat/completions", openai_payload("bench", REQUEST)
                headers = {"authorization": "Bearer k"}
            else:
                model = AnthropicModel("bench", api_key="k", base_url=base, client=_client(fresh))
                url = f"{base}/v1/messages"
                body = anthropic_payload("bench", REQUEST, default_max_tokens=4096)
                headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
            for _ in range(3):  # warm connections and code paths
                await _raw(client, url, body, headers)
                await _adapter(model)
            raw: list[tuple[float, float]] = []
            ours: list[tuple[float, float]] = []
            for _ in range(calls):
                raw.append(await _raw(client, url, body, headers))
                ours.append(await _adapter(model))
            await model.http.client().aclose()

            def med(xs: list[tuple[float, float]], i: int) -> float:
                return statistics.median(x[i] for x in xs) * 1e6

            results[protocol] = {
                "ttft_raw_us": med(raw, 0),
                "ttft_adapter_us": med(ours, 0),
                "total_raw_us": med(raw, 1),
                "total_adapter_us": med(ours, 1),
                "overhead_us": med(ours, 1) - med(raw, 1),
            }
    return results


def run(quick: bool = False) -> dict[str, Any]:
    calls = 5 if quick else 100
    with running_chaos_server({"script": "text"}) as base:
        results = asyncio.run(_measure(base, calls))
    lines = [
        f"provider adapters vs raw httpx, chaos server on loopback, {calls} calls each "
        "(medians, µs)"
    ]
    for protocol, r in results.items():
        lines.append(
            f"  {protocol:<9} TTFT raw {r['ttft_raw_us']:8.0f}  adapter {r['ttft_adapter_us']:8.0f}"
            f"   | whole stream raw {r['total_raw_us']:8.0f}  adapter {r['total_adapter_us']:8.0f}"
            f"   | overhead {r['overhead_us']:+7.0f}"
        )
    return {"lines": lines, "calls": calls, **results}


if __name__ == "__main__":
    for line in run()["lines"]:
        print(line)
