"""Built-in scripts for `ScriptedModel` (the `scripted[:NAME]` model spec), which the chaos
server answers from too.

A script is what `ScriptedModel` accepts: a list of replies indexed by the position in the
current turn, or a function of the request. Replies depend on the request alone, so a
retried call gets the same answer as the failed one would have.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from typing import Any

from orchestrion.models.messages import ModelRequest, ToolSpec
from orchestrion.models.scripted import Script, ScriptedCall, ScriptedReply, say
from orchestrion.observe.trace import shorten


def sample_arguments(tool: ToolSpec) -> dict[str, Any]:
    """Plausible arguments for a tool, from its JSON schema (required properties only, or
    all when none are marked required)."""
    schema = tool.parameters
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        return {}
    required = schema.get("required") or list(props)
    return {name: _sample(props.get(name) or {}, name) for name in required if name in props}


def _sample(schema: dict[str, Any], name: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return f"example {name}"


def _last(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if message.role != "system":
            return message.role
    return "user"


def _last_user_text(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.content or ""
    return ""


def default_script(request: ModelRequest) -> ScriptedReply:
    """A tool call when the request offers tools and the user just spoke; after a tool
    result, a short answer quoting it; without tools, a short text answer."""
    last = _last(request)
    if request.tools and last == "user":
        tool = request.tools[0]
        arguments = sample_arguments(tool)
        # Numbers the user gave ("I'm customer 42") fill the integer arguments, in order,
        # so a demo asks about what the user said rather than about id 1.
        numbers = iter(re.findall(r"\b\d+\b", _last_user_text(request)))
        properties = tool.parameters.get("properties") or {}
        for name in arguments:
            schema = properties.get(name) if isinstance(properties, dict) else None
            if isinstance(schema, dict) and schema.get("type") == "integer":
                arguments[name] = int(next(numbers, arguments[name]))
        return ScriptedReply(
            text="Let me check that.",
            calls=(ScriptedCall(name=tool.name, arguments=json.dumps(arguments)),),
        )
    if last == "tool":
        result = next(m for m in reversed(request.messages) if m.role == "tool")
        return say(f"Done. The tool answered: {shorten(result.content or '', 120)}")
    return say("Hello from the orchestrion chaos server. This is a short scripted answer.")


def echo_script(request: ModelRequest) -> ScriptedReply:
    """Repeats the last user message (never calls tools)."""
    return say(f"You said: {_last_user_text(request)}")


def text_script(request: ModelRequest) -> ScriptedReply:
    """Always the same short text (never calls tools)."""
    return say("Hello from the orchestrion chaos server. This is a short scripted answer.")


SCRIPTS: dict[str, Callable[[ModelRequest], ScriptedReply]] = {
    "default": default_script,
    "echo": echo_script,
    "text": text_script,
}


def load_script(name: str) -> Script:
    """A built-in script by name, or `package.module:attribute` naming a Script."""
    if name in SCRIPTS:
        return SCRIPTS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        value = getattr(importlib.import_module(module_name), attr)
        if callable(value) or isinstance(value, list | tuple):
            return value  # type: ignore[no-any-return]
        raise ValueError(f"{name} is neither a list of replies nor a function of the request")
    known = ", ".join(sorted(SCRIPTS))
    raise ValueError(f"unknown script {name!r} (built-in: {known}; or use module:attribute)")
