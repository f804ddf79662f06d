"""Fault plans: which fault the chaos server injects into which call.

A plan is an ordered list of rules. For each call (numbered from 1 across both
protocols), the first rule that matches wins. A rule matches when all its selectors do:
`at` (explicit call numbers), `every` (every Nth call), `probability` (a seeded draw),
`protocols`, `streaming`, and `times` (stop after that many injections). A rule with no
selector matches every call. The draw for call N depends only on (seed, N), so a plan
replays identically whatever else happens, as long as calls arrive in the same order.

An `x-chaos-fault` request header overrides the plan for that call:
`x-chaos-fault: rate_limit; retry_after=2; retry_after_format=ms` (or `none`).
"""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrion.models.scripted import ScriptedReply

FaultKind = Literal[
    "latency",
    "hang",
    "stall",
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "connection_reset",
    "empty_body",
    "malformed_json",
    "truncated_stream",
    "midstream_error",
    "malformed_tool_args",
    "invented_tool",
    "max_tokens",
    "context_length",
]

FAULTS: dict[str, str] = {
    "latency": "wait `delay` seconds, then answer normally",
    "hang": "accept the request and never answer (until the client gives up)",
    "stall": "start the answer (`after_chunks` events), then go silent",
    "rate_limit": "429 with Retry-After (`retry_after` seconds; `retry_after_format`: "
    "seconds | ms | date | both | none) and rate-limit headers",
    "server_error": "500 with a provider-shaped error body",
    "unavailable": "503 with a provider-shaped error body",
    "overloaded": "529 overloaded_error (Anthropic's overload status)",
    "connection_reset": "drop the TCP connection (RST) without answering",
    "empty_body": "200 with an empty body",
    "malformed_json": "200 with a body (or stream event) that is not valid JSON",
    "truncated_stream": "stream `after_chunks` events, then end without a finish",
    "midstream_error": "stream `after_chunks` events, then an error event "
    "(`error_type`, default overloaded_error / server_error)",
    "malformed_tool_args": "a tool call whose arguments are broken (`variant`: "
    "trailing_comma | single_quotes | code_fence | double_encoded | truncated)",
    "invented_tool": "a tool call to a tool the request did not offer (`tool_name`)",
    "max_tokens": "output cut at the token limit (finish_reason length / max_tokens)",
    "context_length": "400 saying the prompt exceeds the context window",
}

MALFORMED_VARIANTS = (
    "trailing_comma",
    "single_quotes",
    "code_fence",
    "double_encoded",
    "truncated",
)

Protocol = Literal["openai", "anthropic"]
RetryAfterFormat = Literal["seconds", "ms", "date", "both", "none"]


class FaultRule(BaseModel):
    """One fault and when to inject it, with the fault's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fault: FaultKind
    # selectors (all given ones must match; none given: every call)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    every: int | None = Field(default=None, ge=1)
    at: tuple[int, ...] = ()
    times: int | None = Field(default=None, ge=1)
    protocols: tuple[Protocol, ...] = ()
    streaming: bool | None = None
    # parameters
    delay: float = Field(default=1.0, ge=0.0)
    retry_after: float = Field(default=1.0, ge=0.0)
    retry_after_format: RetryAfterFormat = "seconds"
    after_chunks: int = Field(default=2, ge=0)
    error_type: str | None = None
    variant: str | None = None
    tool_name: str = "invented_tool"


class FaultPlan(BaseModel):
    """Everything the chaos server needs: faults, a seed and what to answer with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    faults: tuple[FaultRule, ...] = ()
    # A built-in script name ("default", "echo", "text") or "module:attribute".
    script: str = "default"
    # Inline replies, indexed by position in the turn (overrides `script` when given).
    replies: tuple[ScriptedReply, ...] = ()
    # Characters per streamed text/argument piece, and the pause between stream events.
    chunk_size: int = Field(default=8, ge=1)
    chunk_delay: float = Field(default=0.0, ge=0.0)
    # The model's context window, in the tokens the server reports as input tokens
    # (characters / 4): a longer prompt gets the provider's real context-length error,
    # with the real numbers in it. None: no limit.
    context_window: int | None = Field(default=None, ge=1)

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        """A plan from a .json or .toml file. Raises PlanError (one line) when the file
        cannot be read or is not a valid plan."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            data: Any = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(
                f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{p}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"cannot read {p}: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PlanError(f"{p}: {describe_plan_error(exc)}") from None


class PlanError(ValueError):
    """A fault plan or an x-chaos-fault header that cannot be used (one-line message)."""


def describe_plan_error(exc: ValidationError) -> str:
    """A pydantic error about a plan or a rule as one line: `where: what` per problem."""
    problems = []
    for error in exc.errors():
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        given = error.get("input")
        if error["type"] == "literal_error" and error["loc"][-1:] == ("fault",):
            what = f"unknown fault {given!r} (`orchestrion chaos faults` lists them)"
        elif error["type"] == "extra_forbidden":
            what = "unknown field"
        elif error["type"] == "missing":
            what = "required"
        else:
            what = f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {given!r})"
        problems.append(f"{where}: {what}" if where else what)
    return "; ".join(problems)


def draw(seed: int, call_number: int) -> random.Random:
    """The random source for one call: a function of (seed, call number) only."""
    return random.Random(f"{seed}:{call_number}")


def choose(
    plan: FaultPlan,
    call_number: int,
    *,
    protocol: Protocol,
    streaming: bool,
    injected: dict[int, int] | None = None,
) -> tuple[int, FaultRule] | None:
    """The (rule index, rule) to apply to a call, or None. `injected` counts past
    injections per rule index (for `times`); the caller updates it."""
    rng = draw(plan.seed, call_number)
    injected = injected or {}
    for index, rule in enumerate(plan.faults):
        # Draw for every probabilistic rule, matched or not, so one rule's outcome does
        # not shift the next rule's random numbers.
        roll = rng.random() if rule.probability is not None else 0.0
        if rule.protocols and protocol not in rule.protocols:
            continue
        if rule.streaming is not None and rule.streaming != streaming:
            continue
        if rule.at and call_number not in rule.at:
            continue
        if rule.every is not None and call_number % rule.every != 0:
            continue
        if rule.probability is not None and roll >= rule.probability:
            continue
        if rule.times is not None and injected.get(index, 0) >= rule.times:
            continue
        return index, rule
    return None


def parse_fault_header(value: str) -> FaultRule | None:
    """`kind; key=value; ...` -> a rule (None for `none`). Raises ValueError if invalid."""
    parts = [p.strip() for p in value.split(";") if p.strip()]
    if not parts or parts[0].lower() == "none":
        return None
    data: dict[str, Any] = {"fault": parts[0]}
    for part in parts[1:]:
        key, sep, raw = part.partition("=")
        if not sep:
            raise PlanError(f"expected key=value, got {part!r}")
        data[key.strip()] = raw.strip()
    try:
        return FaultRule.model_validate(data)
    except ValidationError as exc:
        raise PlanError(describe_plan_error(exc)) from None


def _rule(fault: FaultKind, **kwargs: Any) -> FaultRule:
    return FaultRule(fault=fault, **kwargs)


PRESETS: dict[str, tuple[str, FaultPlan]] = {
    "none": ("no faults: a well-behaved scripted provider", FaultPlan()),
    "flaky": (
        "a provider on a bad day: ~30% of calls fail in assorted retryable ways",
        FaultPlan(
            faults=(
                _rule("rate_limit", probability=0.06, retry_after=1),
                _rule("rate_limit", probability=0.04, retry_after=0.5, retry_after_format="ms"),
                _rule("unavailable", probability=0.04),
                _rule("server_error", probability=0.03),
                _rule("overloaded", probability=0.03),
                _rule("connection_reset", probability=0.03),
                _rule("truncated_stream", probability=0.03, streaming=True),
                _rule("midstream_error", probability=0.03, streaming=True),
                _rule("latency", probability=0.10, delay=0.5),
            )
        ),
    ),
    "rate-limited": (
        "every 2nd call is a 429 (Retry-After seconds), every 3rd a 429 (retry-after-ms)",
        FaultPlan(
            faults=(
                _rule("rate_limit", every=2, retry_after=1),
                _rule("rate_limit", every=3, retry_after=0.25, retry_after_format="ms"),
            )
        ),
    ),
    "overloaded": (
        "an overloaded provider: 529s and overloaded_error events mid-stream",
        FaultPlan(
            faults=(
                _rule("overloaded", probability=0.25),
                _rule("midstream_error", probability=0.15, streaming=True),
                _rule("unavailable", probability=0.10),
            )
        ),
    ),
    "slow": (
        "latency on half the calls, and the occasional hang or stalled stream",
        FaultPlan(
            faults=(
                _rule("hang", probability=0.05),
                _rule("stall", probability=0.05, streaming=True),
                _rule("latency", probability=0.5, delay=2.0),
            )
        ),
    ),
    "bad-output": (
        "answers that arrive but are wrong: broken tool arguments, invented tools, "
        "cut at max tokens, malformed or empty bodies",
        FaultPlan(
            faults=(
                _rule("malformed_tool_args", probability=0.25),
                _rule("invented_tool", probability=0.10),
                _rule("max_tokens", probability=0.10),
                _rule("malformed_json", probability=0.05),
                _rule("empty_body", probability=0.05),
            )
        ),
    ),
    "everything": (
        "every fault class at a low rate (~45% of calls hit something)",
        FaultPlan(
            faults=(
                *(
                    _rule(kind, probability=0.03, delay=0.5)  # type: ignore[arg-type]
                    for kind in FAULTS
                    if kind != "hang"
                ),
                _rule("hang", probability=0.01),
            )
        ),
    ),
}


def preset(name: str) -> FaultPlan:
    try:
        return PRESETS[name][1]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
