import asyncio

from orchestrion import Agent, Orchestrion, TextDelta, ToolContext, render_text, tool
from orchestrion.testing import ScriptedModel, call, say


@tool(effect="write")
async def send_email(to: str, body: str, ctx: ToolContext) -> str:
    """Send an email (once, even if the turn is retried or resumed after a crash)."""
    return "sent" if await ctx.record_effect("email", {"to": to, "body": body}) else "already sent"


agent = Agent("mailer", tools=[send_email], model=ScriptedModel([  # or model="openai:gpt-4o-mini"
    call("send_email", to="ada@example.com", body="Hi Ada"),
    say("Done: Ada has mail."),
]))


async def main() -> None:
    async with Orchestrion("sqlite:///quickstart.db", agents=[agent]) as orx:
        await orx.work(drain=True)  # finish a turn that a killed run of this script left
        if not await orx.store.list_runs(conversation_id="demo-1"):  # one turn, however often
            async for event in orx.stream("mailer", "Email Ada, please.", conversation="demo-1"):
                if isinstance(event, TextDelta):
                    print(event.text, end="", flush=True)
        print("\n" + render_text(await orx.trace("demo-1")))


asyncio.run(main())
