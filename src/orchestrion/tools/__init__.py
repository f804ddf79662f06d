"""Tools: typed functions, their schemas, their context, and the argument pipeline."""

from orchestrion.tools.arguments import (
    ArgumentPolicy,
    ArgumentResult,
    ReaskBudget,
    prepare_arguments,
    prepare_output,
)
from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, ToolRegistry, render_result, tool

__all__ = [
    "ArgumentPolicy",
    "ArgumentResult",
    "ReaskBudget",
    "Tool",
    "ToolContext",
    "ToolRegistry",
    "prepare_arguments",
    "prepare_output",
    "render_result",
    "tool",
]
