"""Tools from typed Python functions: schema from type hints, a declared effect, a timeout."""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, create_model

from orchestrion.models.messages import ToolSpec
from orchestrion.resilience.classify import DEFAULT_CLASSIFIER, Classifier
from orchestrion.resilience.retry import RetryPolicy
from orchestrion.tools.context import ToolContext

Effect = Literal["read", "write"]

# Tools are usually close by (a database, an internal API): fewer, shorter retries.
DEFAULT_TOOL_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=2.0, max_elapsed=30.0)


class Tool:
    """A callable the model may invoke.

    `effect="write"` marks a tool with side effects: it must honour the idempotency key
    in its context (every retry and every resumption reuses it). `timeout` bounds one
    attempt (seconds); `retry` retries what the error classes call retryable (connection
    errors, timeouts, 429/5xx from HTTP APIs), never a plain exception; `breaker` keeps a
    circuit breaker named "tool:NAME" shared through the store.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        effect: Effect = "read",
        timeout: float | None = 60.0,
        retry: RetryPolicy | None = DEFAULT_TOOL_RETRY,
        breaker: bool = True,
        step_timeout: float | None = None,
        classifier: Classifier = DEFAULT_CLASSIFIER,
    ) -> None:
        self.fn = fn
        self.classifier = classifier
        self.name = name or fn.__name__
        self.description = (description or inspect.getdoc(fn) or "").strip()
        self.effect: Effect = effect
        self.timeout = timeout  # one attempt
        self.step_timeout = step_timeout  # all attempts together (None: the turn's deadline)
        self.retry = retry
        self.breaker = breaker
        self.is_async = inspect.iscoroutinefunction(fn)
        self.context_param, self.args_model = _arguments_model(fn, self.name)
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def spec(self) -> ToolSpec:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    async def invoke(self, arguments: BaseModel, ctx: ToolContext) -> Any:
        """Run the tool with already-validated arguments."""
        kwargs = {field: getattr(arguments, field) for field in type(arguments).model_fields}
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        if self.is_async:
            return await self.fn(**kwargs)
        # A sync tool runs in a thread so a slow one does not stall the event loop. A
        # thread cannot be stopped: an attempt that timed out (or was cancelled) keeps
        # running, so a retry never starts a second execution beside it. It waits for the
        # first one instead, and takes its result if it succeeded.
        earlier = ctx._thread
        if earlier is not None:
            if not earlier.done():
                return await asyncio.shield(earlier)
            if not earlier.cancelled() and earlier.exception() is None:
                return earlier.result()
        loop = asyncio.get_running_loop()
        thread = loop.run_in_executor(None, functools.partial(self.fn, **kwargs))
        ctx._thread = thread
        return await asyncio.shield(thread)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, effect={self.effect!r})"


def _arguments_model(fn: Callable[..., Any], tool_name: str) -> tuple[str | None, type[BaseModel]]:
    """Build a pydantic model of the function's parameters (minus its ToolContext)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs cannot be described to a model")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model_name = "".join(part.capitalize() for part in tool_name.split("_")) + "Arguments"
    # extra="forbid": an argument the tool does not take is an error the model must hear of.
    model = create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
    return context_param, model


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "read",
    timeout: float | None = 60.0,
    retry: RetryPolicy | None = DEFAULT_TOOL_RETRY,
    breaker: bool = True,
    step_timeout: float | None = None,
    classifier: Classifier = DEFAULT_CLASSIFIER,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    effect: Effect = "read",
    timeout: float | None = 60.0,
    retry: RetryPolicy | None = DEFAULT_TOOL_RETRY,
    breaker: bool = True,
    step_timeout: float | None = None,
    classifier: Classifier = DEFAULT_CLASSIFIER,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator: turn a typed function into a Tool (`@tool` or `@tool(effect="write")`)."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            effect=effect,
            timeout=timeout,
            retry=retry,
            breaker=breaker,
            step_timeout=step_timeout,
            classifier=classifier,
        )

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """The tools one agent may call, by name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t if isinstance(t, Tool) else Tool(t))

    def add(self, t: Tool) -> None:
        if t.name in self._tools:
            raise ValueError(f"two tools are named {t.name!r}")
        self._tools[t.name] = t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(t.spec for t in self._tools.values())

    def __iter__(self) -> typing.Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def render_result(value: Any) -> str:
    """What the model reads back from a tool: text stays text, the rest becomes JSON."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value).decode()
