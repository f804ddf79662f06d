"""Tools the argument-pipeline tests call: one per kind of parameter that goes wrong."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from orchestrion.tools import ToolRegistry, tool


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lang: str = "en"
    year: int | None = None


@tool
def get_weather(city: str, days: int = 1) -> str:
    """Forecast for a city."""
    return city


@tool(effect="write")
def book_slot(customer_id: int, when: str, note: str | None = None) -> str:
    """Book an appointment."""
    return when


@tool
def set_domain(domain: list[str]) -> str:
    return ",".join(domain)


@tool(effect="write")
def write_file(path: str, content: str) -> str:
    return path


@tool
def ping() -> str:
    return "pong"


@tool
def python_exec(code: str) -> str:
    return code


@tool
def search(query: str, filters: Filters | None = None, limit: int = 10) -> str:
    return query


@tool
def set_flag(enabled: bool) -> str:
    return str(enabled)


@tool
def set_mode(mode: Literal["fast", "slow"], ratio: float = 1.0) -> str:
    return mode


@tool
def tag(name: str, labels: list[str] | None = None) -> str:
    return name


ALL_TOOLS = (
    get_weather, book_slot, set_domain, write_file, ping,
    python_exec, search, set_flag, set_mode, tag,
)  # fmt: skip


def make_registry() -> ToolRegistry:
    return ToolRegistry(ALL_TOOLS)


@tool
def list_items(limit: int = 10) -> str:
    return str(limit)


ALL_TOOLS = (*ALL_TOOLS, list_items)
