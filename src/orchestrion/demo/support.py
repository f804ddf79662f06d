"""A customer-support agent with three tools, on a scripted model (no key, no network).

The write tools record their side effects in the store under their idempotency key (a
booking table and an email outbox), so a duplicate after a crash would be visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from orchestrion.engine.agent import Agent
from orchestrion.models.base import Model
from orchestrion.models.messages import ModelRequest
from orchestrion.models.scripted import (
    ScriptedModel,
    ScriptedReply,
    call,
    calls,
    say,
    turn_position,
)
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import tool

CUSTOMERS = {
    42: {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "plan": "pro",
        "appointment": "Tuesday 09:00",
    },
    7: {
        "name": "Alan Turing",
        "email": "alan@example.com",
        "plan": "basic",
        "appointment": "Monday 14:00",
    },
}

DEFAULT_MESSAGE = "Hi, I'm customer 42. Please move my appointment to Friday 10:00 and email me."


def make_tools(tool_latency: float = 0.0) -> list:  # type: ignore[type-arg]
    @tool(effect="read")
    async def crm_lookup(customer_id: int) -> dict:  # type: ignore[type-arg]
        """Look a customer up in the CRM by id."""
        customer = CUSTOMERS.get(customer_id)
        if customer is None:
            # An answer, not a failure: the lookup worked and found nobody (nothing to retry).
            return {"customer_id": customer_id, "found": False}
        return {"customer_id": customer_id, "found": True, **customer}

    @tool(effect="write")
    async def book_appointment(customer_id: int, slot: str, ctx: ToolContext) -> dict:  # type: ignore[type-arg]
        """Book (or move) the customer's appointment to a slot such as 'Friday 10:00'."""
        reference = "BK-" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:8].upper()
        await ctx.record_effect(
            "booking", {"customer_id": customer_id, "slot": slot, "reference": reference}
        )
        # A slow calendar API: the booking landed, the answer is still on its way. A crash
        # here is exactly the case idempotency keys exist for.
        await asyncio.sleep(tool_latency)
        return {"reference": reference, "slot": slot, "status": "confirmed"}

    @tool(effect="write")
    async def send_email(to: str, subject: str, body: str, ctx: ToolContext) -> dict:  # type: ignore[type-arg]
        """Send an email to a customer."""
        first = await ctx.record_effect("email", {"to": to, "subject": subject, "body": body})
        await asyncio.sleep(tool_latency)
        return {"status": "sent" if first else "already sent", "to": to}

    return [crm_lookup, book_appointment, send_email]


def _customer_id(text: str) -> int:
    match = re.search(r"customer\s*#?\s*(\d+)", text, re.IGNORECASE)
    return int(match.group(1)) if match else 42


def _slot(text: str) -> str:
    match = re.search(
        r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\s+(\d{1,2}:\d{2})", text
    )
    return f"{match.group(1)} {match.group(2)}" if match else "Friday 10:00"


def support_script(request: ModelRequest) -> ScriptedReply:
    """Decide the scripted reply from the turn so far (never from hidden state)."""
    user = next(
        m.content or ""
        for m in reversed(request.messages)
        if m.role == "user" and not m.is_correction
    )
    position = turn_position(request)
    # Tool results by tool name. Over HTTP a tool message carries only its call id, so the
    # name comes from the assistant message that made the call.
    names = {c.id: c.name for m in request.messages for c in m.tool_calls}
    tool_results = {}
    for m in request.messages[-6:]:
        name = m.name or names.get(m.tool_call_id or "")
        if m.role == "tool" and name and m.content:
            try:
                tool_results[name] = json.loads(m.content)
            except ValueError:
                tool_results[name] = {"error": m.content}
    customer_id, slot = _customer_id(user), _slot(user)
    if position == 0:
        return call("crm_lookup", "Let me pull up your account.", customer_id=customer_id)
    if position == 1:
        customer = tool_results.get("crm_lookup", {})
        if "email" not in customer:
            return say(f"I could not find customer {customer_id}. Could you check the number?")
        return calls(
            call("book_appointment", customer_id=customer_id, slot=slot),
            call(
                "send_email",
                to=customer["email"],
                subject="Your appointment",
                body=f"Dear {customer['name']}, your appointment is now on {slot}.",
            ),
            text=f"Thanks, {customer['name'].split()[0]}. Moving you to {slot} and emailing you.",
        )
    booking = tool_results.get("book_appointment", {})
    return say(
        f"All set: your appointment is booked for {booking.get('slot', slot)} "
        f"(reference {booking.get('reference', 'pending')}), and a confirmation email is on "
        "its way. Anything else?"
    )


def support_agent(*, latency: float = 0.0, model: Model | None = None) -> Agent:
    return Agent(
        name="support",
        model=model or ScriptedModel(support_script, name="scripted-support", latency=latency),
        tools=make_tools(tool_latency=latency / 2),
        instructions="You are a concise, friendly customer-support agent. Use the tools.",
    )
