"""Closing conversations and conversations that expired, through the public API, on both
stores: a closed or expired conversation takes no more turns and keeps its history; a
close never cuts a turn short; another tenant's conversation does not exist."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrion import (
    Agent,
    ConversationBusy,
    ConversationClosed,
    ConversationEnded,
    ConversationExpired,
    ConversationState,
    NotFound,
    Orchestrion,
)
from orchestrion.testing import ScriptedModel, say

from .helpers import GatedModel

S = ConversationState


def echo(**kwargs: object) -> Agent:
    return Agent("echo", model=ScriptedModel([say("noted")]), **kwargs)  # type: ignore[arg-type]


async def until(check: object, what: str, attempts: int = 500) -> None:
    """Poll an async predicate (bounded by attempts, never asserted on time)."""
    for _ in range(attempts):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_closed_conversations_take_no_more_turns_and_keep_their_history(
    store_url: str,
) -> None:
    async with Orchestrion(store_url, agents=[echo()]) as orx:
        ids = [f"c{i:03}" for i in range(120)]
        for cid in ids:
            assert (await orx.send("echo", f"hello {cid}", conversation=cid)).status == "succeeded"
        closed, kept = ids[::2], ids[1::2]
        for cid in closed:
            info = await orx.close_conversation(cid)
            assert (info.id, info.state, info.message_count, info.version) == (
                cid, S.CLOSED, 2, 1,
            )  # fmt: skip
        for cid in closed:
            for policy in ("enqueue", "reject", "interrupt"):
                with pytest.raises(ConversationClosed, match=cid):
                    await orx.submit("echo", "anyone?", conversation=cid, busy_policy=policy)
            with pytest.raises(ConversationEnded):
                await orx.send("echo", "anyone?", conversation=cid)
            assert (await orx.conversation(cid)).state == S.CLOSED
            assert [m.content for m in await orx.history(cid)] == [f"hello {cid}", "noted"]
            assert len(await orx.store.list_runs(conversation_id=cid)) == 1  # nothing queued
            # Closing again changes nothing.
            assert (await orx.close_conversation(cid)).state == S.CLOSED
        for cid in kept:
            assert (await orx.send("echo", "again", conversation=cid)).status == "succeeded"
            info = await orx.conversation(cid)
            assert (info.state, info.message_count) == (S.AWAITING_INPUT, 4)


async def test_a_close_is_refused_while_a_turn_is_queued_or_running(store_url: str) -> None:
    gated = GatedModel(ScriptedModel([say("done")], name="gated"))
    agent = Agent("g", model=gated)
    async with Orchestrion(store_url, agents=[agent]) as orx:
        first = await orx.submit("g", "one", conversation="c1")
        second = await orx.submit("g", "two", conversation="c1")
        with pytest.raises(ConversationBusy, match=first.id):
            await orx.close_conversation("c1")  # both queued
        orx.start(first.id)
        await asyncio.wait_for(gated.entered.wait(), 30)
        with pytest.raises(ConversationBusy, match=first.id):
            await orx.close_conversation("c1")  # running: a close never cuts it short
        assert (await orx.conversation("c1")).state != S.CLOSED
        await orx.cancel(second.id)
        gated.gate.set()
        async for _ in orx.events(first.id):
            pass
        assert (await orx.result(first.id)).status == "succeeded"
        info = await orx.close_conversation("c1")
        assert info.state == S.CLOSED and info.message_count == 2


async def test_another_tenants_conversation_cannot_be_closed_or_seen(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo()], tenant="acme") as orx:
        await orx.send("echo", "hi", conversation="mine")
        for call in (orx.close_conversation, orx.conversation):
            with pytest.raises(NotFound):
                await call("mine", tenant="globex")
            with pytest.raises(NotFound):
                await call("nobody", tenant="acme")
        assert (await orx.conversation("mine", tenant="acme")).state == S.AWAITING_INPUT
        assert (await orx.close_conversation("mine", tenant="acme")).state == S.CLOSED


async def test_a_conversation_past_its_expiry_is_expired_until_purged(store_url: str) -> None:
    async with Orchestrion(store_url, agents=[echo(conversation_ttl=0.2)]) as orx:
        first = await orx.send("echo", "hi", conversation="short")
        assert first.status == "succeeded"

        async def expired() -> bool:
            return (await orx.conversation("short")).state == S.EXPIRED

        await until(expired, "the conversation expires")
        with pytest.raises(ConversationExpired, match="short"):
            await orx.send("echo", "still there?", conversation="short")
        assert [m.content for m in await orx.history("short")] == ["hi", "noted"]
        assert (await orx.purge()).conversations == 1
        with pytest.raises(NotFound):
            await orx.conversation("short")
        # Once purged, the id is free: a turn starts a new, empty conversation.
        again = await orx.send("echo", "hello again", conversation="short")
        assert again.status == "succeeded" and len(await orx.history("short")) == 2
        assert (await orx.conversation("short")).state == S.AWAITING_INPUT


async def test_a_turn_in_flight_keeps_its_conversation_alive_past_the_expiry(
    store_url: str,
) -> None:
    gated = GatedModel(ScriptedModel([say("done")], name="gated"))
    agent = Agent("g", model=gated, conversation_ttl=0.2)
    async with Orchestrion(store_url, agents=[agent]) as orx:
        first = await orx.submit("g", "one", conversation="c1")
        orx.start(first.id)
        await asyncio.wait_for(gated.entered.wait(), 30)
        record = await orx.store.get_conversation("c1")

        async def past_expiry() -> bool:
            return time.time() > record.expires_at

        await until(past_expiry, "the expiry passes")
        # Past its expiry, but a turn is in flight: not expired, and it takes turns.
        assert (await orx.conversation("c1")).state != S.EXPIRED
        second = await orx.submit("g", "two", conversation="c1")
        gated.gate.set()
        for run in (first, second):
            async for _ in orx.events(run.id):
                pass
            assert (await orx.result(run.id)).status == "succeeded"
        info = await orx.conversation("c1")
        assert info.message_count == 4 and info.expires_at > record.expires_at
