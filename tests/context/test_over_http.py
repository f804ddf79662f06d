"""A conversation longer than the model's context window, over real HTTP: the chaos
server refuses prompts over its window with OpenAI's and Anthropic's real errors, and the
adapters talk to it on loopback. `window` and `summarize` keep every turn inside it;
`keep_all` fails once past it; a budget larger than the window is shrunk on the first
refusal and remembered. Both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestrion import Agent, Orchestrion
from orchestrion.chaos.plan import FaultPlan
from orchestrion.chaos.testing import chaos_log, running_chaos_server
from orchestrion.context import ContextPolicy, keep_all, summarize, window
from orchestrion.models.anthropic import AnthropicModel
from orchestrion.models.openai import OpenAIModel
from orchestrion.store.base import SummaryRecord

WINDOW = 1_500  # tokens, as the chaos server counts them (characters / 4)
TURNS = 30
QUESTION = "Please tell me more about the order, the parcel and the refund. " * 9  # ~590 chars


@pytest.fixture(scope="module")
def chaos_url() -> Iterator[str]:
    with running_chaos_server(FaultPlan(context_window=WINDOW, script="text")) as url:
        yield url


def model_for(protocol: str, url: str) -> OpenAIModel | AnthropicModel:
    if protocol == "openai":
        return OpenAIModel("gpt-test", api_key="k", base_url=f"{url}/v1")
    return AnthropicModel("claude-test", api_key="k", base_url=url)


def refusals(url: str) -> int:
    entries = chaos_log(url)["entries"]
    return sum(1 for e in entries if e["status"] == 400 and e["detail"].get("context_window"))


async def converse(
    store_url: str, url: str, protocol: str, policy: ContextPolicy, conversation: str = "long"
) -> tuple[list[Any], list[SummaryRecord]]:
    agent = Agent(
        "support",
        model=model_for(protocol, url),
        instructions="Be brief.",
        context=policy,
        retry=None,
    )
    async with Orchestrion(store_url, agents=[agent]) as orx:
        results = [
            await orx.send("support", f"{i}: {QUESTION}", conversation=conversation)
            for i in range(TURNS)
        ]
        succeeded = sum(r.status == "succeeded" for r in results)
        assert len(await orx.history(conversation)) == 2 * succeeded
        return results, await orx.store.load_summaries(conversation)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "policy",
    [window(1_200), summarize(1_200, keep_recent=4)],
    ids=["window", "summarize"],
)
async def test_a_conversation_longer_than_the_window_succeeds(
    store_url: str, chaos_url: str, protocol: str, policy: ContextPolicy
) -> None:
    assert TURNS * len(QUESTION) // 4 > 2 * WINDOW  # far longer than the window
    before = refusals(chaos_url)
    results, summaries = await converse(store_url, chaos_url, protocol, policy)
    assert [r.status for r in results] == ["succeeded"] * TURNS
    assert all(r.answer.startswith("Hello from the orchestrion chaos server") for r in results)
    assert refusals(chaos_url) == before  # never over the window
    if policy.kind == "summarize":  # made by the same model, over the same HTTP
        assert summaries and summaries[0].last_index > TURNS
        assert summaries[0].text.startswith("Hello from the orchestrion chaos server")
    else:
        assert summaries == []


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_keep_all_fails_past_the_window_and_a_large_budget_shrinks_once(
    store_url: str, chaos_url: str, protocol: str
) -> None:
    results, _ = await converse(store_url, chaos_url, protocol, keep_all())
    statuses = [r.status for r in results]
    first_failure = statuses.index("failed")
    assert 0 < first_failure < TURNS and set(statuses[first_failure:]) == {"failed"}
    assert results[first_failure].error is not None
    assert results[first_failure].error["type"] == "ContextLengthExceeded"

    before = refusals(chaos_url)
    results, _ = await converse(store_url, chaos_url, protocol, window(50_000), "shrinking")
    assert [r.status for r in results] == ["succeeded"] * TURNS
    # Refused once (the provider's error names its window), then remembered.
    assert refusals(chaos_url) == before + 1
