"""What one more turn costs on a long conversation, next to a short one: context windows
keep it flat; keep_all grows with the conversation.

1,000 conversations of 200 turns (a 1 KB question and a 1 KB answer each) are written
through the store API: one completed run per conversation carries all its messages in one
commit, as a turn's completion appends its messages (200,000 real turns would take an
hour). Beside them, 1,000 conversations of one turn. Then one more turn on each
conversation, with a scripted model that answers 1 KB at once, by three agents in turn:
`window(max_tokens=1_000)` (a window of about three 1 KB messages: the 2nd turn already
fills it, so the comparison shows what length alone costs), the default `window()`
(16,000 tokens), and `keep_all()`. Per turn, medians: store read calls, message rows
read, bytes of messages sent to the model, and microseconds of the whole turn (submit,
claim, context load, model step, completion: four commits), as the process's CPU time
(the orchestration's own work; on a shared machine the most stable measure) and as wall
time (which adds the scheduler's wake-ups and the disk). And the process's resident
memory after each pass of 2,000 turns, against before it (the conversations are idle
again by then; target: they cost nothing). Turns on short and long conversations take
turns, so both see the same machine.

The store is a temporary SQLite file, or `--store URL` (PostgreSQL: a throwaway schema).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from orchestrion import Agent, Message, Orchestrion, ScriptedModel, say
from orchestrion.context import keep_all, window
from orchestrion.models.messages import ModelDelta, ModelRequest
from orchestrion.observe.events import new_id
from orchestrion.store import open_store
from orchestrion.store.base import EventRecord, RunCompletion, Store

KB = "All good: your parcel left the depot this morning and arrives on Friday. " * 14
KB = KB[:1024]
READS = (
    "history",
    "history_page",
    "history_tail",
    "load_summaries",
    "list_runs",
    "get_conversation",
    "get_run",
    "load_steps",
    "last_event_seq",
    "read_events",
    "next_claimable",
    "queue_heads",
    "cancel_requested",
)
MESSAGE_READS = ("history", "history_page", "history_tail")


class Meter(ScriptedModel):
    """Answers 1 KB at once and keeps the last request (its size is taken after the turn,
    outside the timed part)."""

    def __init__(self, name: str) -> None:
        super().__init__([say(KB)], name=name, chunk_size=1 << 20)
        self.last: ModelRequest | None = None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.last = request
        async for delta in super().stream(request):
            yield delta

    def take_bytes(self) -> int:
        request, self.last = self.last, None
        assert request is not None
        return len(
            json.dumps(
                [m.model_dump(mode="json", exclude_defaults=True) for m in request.messages]
            ).encode()
        )


class Reads:
    """Counts a store's read calls, and the message rows they return, per turn."""

    def __init__(self, store: Store) -> None:
        self.calls = 0
        self.rows = 0
        for name in READS:
            setattr(store, name, self._counted(name, getattr(store, name)))

    def take(self) -> tuple[int, int]:
        out = (self.calls, self.rows)
        self.calls = self.rows = 0
        return out

    def _counted(self, name: str, method: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            result = await method(*args, **kwargs)
            if name in MESSAGE_READS:
                self.rows += len(result)
            return result

        return counted


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def seed(store: Store, conversations: list[str], turns: int) -> None:
    """Each conversation: `turns` turns of a 1 KB question and a 1 KB answer, appended by
    one completed run (one commit)."""
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages.append(Message.user(f"{turn}: {KB}"[:1024]).model_dump(mode="json"))
        messages.append(Message.assistant(KB).model_dump(mode="json"))
    for cid in conversations:
        run_id = new_id("run")
        await store.create_run(
            run_id=run_id,
            conversation_id=cid,
            tenant="default",
            agent="seed",
            input={"message": messages[0]},
            trace_id="0" * 32,
            deadline_at=None,
            busy_policy="enqueue",
            event=EventRecord(run_id, 1, "run.queued", "queued", "0" * 32, "1" * 16, None, 0.0),
            new_conversation=_new("seed"),
        )
        lease = await store.claim(
            run_id, owner="seed", expected_epoch=0, lease_seconds=600, now=time.time()
        )
        assert lease is not None
        done = RunCompletion("succeeded", {"answer": KB}, None, messages, "AWAITING_INPUT", [])
        await store.complete_run(lease, done, now=time.time())


def _new(agent: str) -> Any:
    from orchestrion.store.base import NewConversation

    return NewConversation(agent=agent, ttl_seconds=1e9, state="AWAITING_INPUT")


async def one_pass(
    orx: Orchestrion, reads: Reads, agent: str, model: Meter, groups: dict[str, list[str]]
) -> dict[str, dict[str, float]]:
    """One more turn on each conversation of each group, the groups taking turns (so
    both see the same machine): medians per turn and group, and the process's memory
    before and after (per 1,000 conversations, all idle again by then)."""
    gc.collect()
    before = rss_mb()
    samples: dict[str, dict[str, list[float]]] = {
        name: {"reads": [], "rows": [], "bytes": [], "cpu_us": [], "us": []} for name in groups
    }
    question = f"And one more thing: {KB}"[:1024]
    for cids in zip(*groups.values(), strict=True):
        for name, cid in zip(groups, cids, strict=True):
            reads.take()
            started, cpu = time.perf_counter(), time.process_time()
            result = await orx.send(agent, question, conversation=cid)
            elapsed = (time.perf_counter() - started) * 1e6
            used = (time.process_time() - cpu) * 1e6
            assert result.status == "succeeded", result.error
            calls, rows = reads.take()
            got = samples[name]
            got["us"].append(elapsed)
            got["cpu_us"].append(used)
            got["reads"].append(calls)
            got["rows"].append(rows)
            got["bytes"].append(model.take_bytes())
    gc.collect()
    growth = (rss_mb() - before) * 1000 / sum(len(c) for c in groups.values())
    return {
        name: {
            **{key: statistics.median(values) for key, values in got.items()},
            "rss_mb_per_1000": growth,
        }
        for name, got in samples.items()
    }


async def measure(url: str, conversations: int, turns: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    short = [f"short-{tag}-{i}" for i in range(conversations)]
    long = [f"long-{tag}-{i}" for i in range(conversations)]
    warm = [f"warm-{tag}-{i}" for i in range(10)]
    started = time.perf_counter()
    async with open_store(url) as store:
        await seed(store, short + warm, 1)
        await seed(store, long, turns - 1)
    seeded = time.perf_counter() - started
    models = {
        "window(max_tokens=1000)": Meter("small-window"),
        "window() (default)": Meter("default-window"),
        "keep_all()": Meter("keep-all"),
    }
    agents = [
        Agent("small", model=models["window(max_tokens=1000)"], context=window(1_000)),
        Agent("default", model=models["window() (default)"]),
        Agent("all", model=models["keep_all()"], context=keep_all()),
    ]
    results: dict[str, Any] = {"seed_s": round(seeded, 1)}
    async with Orchestrion(url, agents=agents) as orx:
        reads = Reads(orx.store)
        for agent, (label, model) in zip(agents, models.items(), strict=True):
            # Code and caches warm first; then turn 2 and the last turn, taking turns.
            await one_pass(orx, reads, agent.name, model, {"warm": warm[:5], "also": warm[5:]})
            results[label] = await one_pass(
                orx, reads, agent.name, model, {"turn 2": short, f"turn {turns}": long}
            )
    return results


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    conversations, turns = (20, 30) if quick else (1000, 200)
    if store is not None and store.startswith(("postgresql://", "postgres://")):
        return _on_postgres(store, conversations, turns)
    near = None
    if store is not None:
        near = Path(store.removeprefix("sqlite:///")).resolve().parent
    with tempfile.TemporaryDirectory(prefix="orchestrion-bench-", dir=near) as folder:
        results = asyncio.run(
            measure(f"sqlite:///{Path(folder) / 'context.db'}", conversations, turns)
        )
    return _report(results, conversations, turns, "a temporary SQLite file")


def _on_postgres(url: str, conversations: int, turns: int) -> dict[str, Any]:
    """In a throwaway schema of the given database (dropped afterwards)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _workload import pg_drop_schema, pg_prefix, pg_schema_url  # type: ignore[import-not-found]
    from orchestrion.store.postgres import parse_postgres_url

    conninfo, _schema, where = parse_postgres_url(url)
    schema = f"{pg_prefix()}_context"
    try:
        results = asyncio.run(measure(pg_schema_url(url, schema), conversations, turns))
    finally:
        pg_drop_schema(conninfo, schema)
    return _report(results, conversations, turns, f"PostgreSQL at {where}")


def _report(results: dict[str, Any], conversations: int, turns: int, where: str) -> dict[str, Any]:
    last = f"turn {turns}"
    lines = [
        f"{conversations:,} conversations of {turns - 1} turns (1 KB messages) and "
        f"{conversations:,} of 1 turn, in {where} (seeded in {results['seed_s']} s); one "
        f"more turn on each (turn {turns}, and turn 2); medians per turn:",
        f"{'policy':26} {'turn':>5} {'reads':>6} {'rows':>6} {'bytes sent':>11} "
        f"{'CPU µs':>8} {'wall µs':>8} {'RSS MB/1000 idle':>17}",
    ]
    for label in ("window(max_tokens=1000)", "window() (default)", "keep_all()"):
        for turn in ("turn 2", last):
            r = results[label][turn]
            lines.append(
                f"{label:26} {turn.split()[1]:>5} {r['reads']:>6.0f} {r['rows']:>6.0f} "
                f"{r['bytes']:>11,.0f} {r['cpu_us']:>8,.0f} {r['us']:>8,.0f} "
                f"{r['rss_mb_per_1000']:>17.1f}"
            )
        a, b = results[label]["turn 2"], results[label][last]
        ratios = {
            k: b[k] / a[k] if a[k] else float("nan")
            for k in ("reads", "rows", "bytes", "cpu_us", "us")
        }
        results[label]["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
        lines.append(
            f"{'':26} {last.split()[1]}/2: reads {ratios['reads']:.2f}x, rows "
            f"{ratios['rows']:.2f}x, bytes {ratios['bytes']:.2f}x, CPU µs "
            f"{ratios['cpu_us']:.2f}x, wall µs {ratios['us']:.2f}x"
        )
    small = results["window(max_tokens=1000)"]["ratios"]
    flat = max(small["reads"], small["bytes"], small["cpu_us"]) <= 1.5
    lines.append(
        f"target: with a window, turn {turns} costs within 1.5x turn 2 (store reads, bytes "
        f"sent, CPU µs; rows read are bounded by the window): {'met' if flat else 'NOT met'}"
    )
    results["lines"] = lines
    results["conversations"], results["turns"] = conversations, turns
    return results
