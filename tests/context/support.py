"""Helpers of the context tests: recording models, histories written through the store
API (as completed turns), and a store that counts its reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from orchestrion import Message, ScriptedModel
from orchestrion.errors import ContextLengthExceeded
from orchestrion.models.messages import ModelDelta, ModelRequest
from orchestrion.observe.events import new_id
from orchestrion.store.base import EventRecord, RunCompletion, Store

READS = (
    "history",
    "history_page",
    "history_tail",
    "load_summaries",
    "list_runs",
    "get_conversation",
    "load_steps",
    "last_event_seq",
)


class Recording(ScriptedModel):
    """A scripted model that keeps every request it was sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.requests.append(request)
        async for delta in super().stream(request):
            yield delta


class Windowed(Recording):
    """A scripted model with a context window: a prompt of more tokens than `window`
    (counted as it reports input tokens) gets OpenAI's context-length error."""

    def __init__(self, *args: Any, window: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = window
        self.refused = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        tokens = sum(len(m.content or "") for m in request.messages) // 4 + 1
        if tokens > self.window:
            self.refused += 1
            self.requests.append(request)
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.window} tokens. However, "
                f"your messages resulted in {tokens} tokens.",
                status_code=400,
            )
        async for delta in super().stream(request):
            yield delta


async def seed_turns(
    store: Store,
    conversation: str,
    turns: Sequence[Sequence[Message]],
    *,
    agent: str,
    tenant: str = "default",
) -> None:
    """Completed turns with these messages, written through the store API as the engine
    writes them (queue, claim, complete)."""
    await store.ensure_conversation(
        conversation, tenant=tenant, agent=agent, ttl_seconds=1e9, state="AWAITING_INPUT"
    )
    for messages in turns:
        run_id = new_id("run")
        queued = EventRecord(run_id, 1, "run.queued", "queued", "0" * 32, "1" * 16, None, 0.0)
        await store.create_run(
            run_id=run_id,
            conversation_id=conversation,
            tenant=tenant,
            agent=agent,
            input={"message": messages[0].model_dump(mode="json")},
            trace_id="0" * 32,
            deadline_at=None,
            busy_policy="enqueue",
            event=queued,
        )
        lease = await store.claim(
            run_id, owner="seed", expected_epoch=0, lease_seconds=60, now=time.time()
        )
        assert lease is not None
        done = RunCompletion(
            "succeeded",
            {"answer": messages[-1].content or ""},
            None,
            [m.model_dump(mode="json") for m in messages],
            "AWAITING_INPUT",
            [],
        )
        await store.complete_run(lease, done, now=time.time())


def chat_turns(count: int, size: int = 400, start: int = 0) -> list[list[Message]]:
    """`count` turns of a user question and an answer, each about `size` characters."""
    filler = "lorem ipsum dolor sit amet " * (size // 27 + 1)
    return [
        [
            Message.user(f"question {start + i}: {filler[:size]}"),
            Message.assistant(f"answer {start + i}: {filler[:size]}"),
        ]
        for i in range(count)
    ]


class ReadCounter:
    """Counts the calls of a store's reading methods, and the rows they returned, by
    wrapping them on the store object itself (so it is still the same Store)."""

    def __init__(self, store: Store) -> None:
        self.calls: dict[str, int] = {}
        self.rows = 0
        for name in READS:
            setattr(store, name, self._counted(name, getattr(store, name)))

    def reset(self) -> None:
        self.calls, self.rows = {}, 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def _counted(self, name: str, method: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            result = await method(*args, **kwargs)
            if isinstance(result, list | dict):
                self.rows += len(result)
            return result

        return counted
