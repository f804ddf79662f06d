"""Server-Sent Events: one frame per durable event, keep-alive comments while waiting.

Each frame is `id: <seq>`, `event: <type>`, `data: <json of the typed event>` (the
`model_dump` of the class `orchestrion.observe.public` gives its type: its own fields,
the common ones, and the raw `attributes`). The JSON is ASCII-only (no raw newline can
split a data line). The stream reads the store through
`Orchestrion.subscribe`, so it is the same whether the run executes in this process, in a
worker, or resumed after a crash; closing it never touches the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from orchestrion.observe.public import BaseEvent
from orchestrion.runtime import Orchestrion

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}
SSE_MEDIA_TYPE = "text/event-stream"
# A reconnecting EventSource waits this long (ms) before it tries again.
RETRY_MS = 1000


def event_json(event: BaseEvent) -> dict[str, Any]:
    return event.model_dump(mode="json")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)


def frame(event: BaseEvent) -> bytes:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {dumps(event_json(event))}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


async def event_stream(
    orx: Orchestrion,
    run_id: str,
    *,
    after_seq: int,
    tenant: str | None,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    """The run's events after `after_seq` as SSE frames, until the run ends.

    The store is read by a pump task feeding a queue, so waiting for the next event can
    time out (and send a keep-alive comment) without cancelling the subscription."""
    queue: asyncio.Queue[BaseEvent | BaseException | None] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for event in orx.subscribe(run_id, after_seq=after_seq, tenant=tenant):
                await queue.put(event)
        except Exception as exc:  # surfaced to the response below
            await queue.put(exc)
        else:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_seconds)
            except TimeoutError:
                yield KEEPALIVE
                continue
            # Whatever else is already waiting goes out in the same write.
            batch: list[bytes] = []
            while isinstance(item, BaseEvent):
                batch.append(frame(item))
                if queue.empty() or len(batch) >= 64:
                    break
                item = queue.get_nowait()
            if batch:
                yield b"".join(batch)
                if isinstance(item, BaseEvent):
                    continue
            if item is None:
                return
            # The headers are sent: the only honest signal left is an error event.
            yield (
                "event: error\ndata: "
                + dumps({"type": "stream_error", "message": "the event stream failed"})
                + "\n\n"
            ).encode()
            return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
