"""Tools: typed functions, their schemas, their context, and the argument pipeline."""

from orchestrion.tools.context import ToolContext
from orchestrion.tools.registry import Tool, ToolRegistry, render_result, tool

__all__ = ["Tool", "ToolContext", "ToolRegistry", "render_result", "tool"]
