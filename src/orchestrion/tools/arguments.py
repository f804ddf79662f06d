"""The tool-call argument pipeline: parse, repair, validate, re-ask, degrade.

    result = prepare_arguments(call, registry, truncated=response.finish_reason == "length")
    if result.executable:        # status "ok" or "repaired"
        await tool.invoke(result.arguments, ctx)
    elif budget.allow(result.budget_key):
        ...send result.error back as the tool's (error) result and let the model retry
    else:
        outcome = exhausted_outcome(result, policy)

Guarantees: a call whose response stopped at the token limit is never executable; an
executable result always holds an instance of the tool's `args_model` that passed
validation; nothing here raises on any input text. What is repaired and what is refused
is listed in docs/arguments.md.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from orchestrion.models.messages import ToolCall
from orchestrion.tools.registry import ToolRegistry
from orchestrion.tools.repair import Parsed, parse_arguments

__all__ = [
    "ArgumentPolicy",
    "ArgumentResult",
    "ArgumentStatus",
    "ExhaustedOutcome",
    "ReaskBudget",
    "exhausted_outcome",
    "prepare_arguments",
    "prepare_output",
    "render_exhausted",
]

ArgumentStatus = Literal["ok", "repaired", "invalid", "truncated", "unknown_tool"]

# The budget key all invented tool names share, so inventing a new name each time does
# not buy a fresh set of re-asks.
UNKNOWN_TOOL_KEY = "<unknown tool>"

_MAX_LISTED_PROBLEMS = 3
_MAX_LISTED_TOOLS = 30
# Names models call that are not tools but wrappers around tools.
_PARALLEL_WRAPPERS = {"multi_tool_use.parallel", "multi_tool_use", "parallel"}
_NAME_PREFIXES = ("functions.", "function.", "tools.", "tool.")
# Keys models sometimes wrap the real arguments in.
_WRAPPER_KEYS = ("arguments", "parameters", "args", "input", "kwargs")


@dataclass(frozen=True, slots=True)
class ArgumentResult:
    """Everything the engine needs to act on one call and to record it in the trace."""

    tool_name: str  # the registered tool's name (the requested one for unknown tools)
    status: ArgumentStatus
    arguments: BaseModel | None  # validated instance of the args model, only for ok/repaired
    repairs: tuple[str, ...]  # what was repaired, human-readable, in order
    error: str | None  # the compact message to send back to the model
    raw: str  # the raw arguments text exactly as the model produced it
    problems: tuple[str, ...] = ()  # each problem alone, e.g. "field 'x': expected ..."
    requested_name: str = ""  # the tool name exactly as the model produced it
    suggestion: str | None = None  # closest existing tool, for unknown tools

    @property
    def executable(self) -> bool:
        return self.status in ("ok", "repaired") and self.arguments is not None

    @property
    def budget_key(self) -> str:
        """What ReaskBudget.allow should count this failure against."""
        return UNKNOWN_TOOL_KEY if self.status == "unknown_tool" else self.tool_name

    def event_payload(self) -> dict[str, Any]:
        """A JSON-ready summary for the trace (raw output kept verbatim)."""
        return {
            "tool_name": self.tool_name,
            "requested_name": self.requested_name or self.tool_name,
            "status": self.status,
            "repairs": list(self.repairs),
            "problems": list(self.problems),
            "error": self.error,
            "raw": self.raw,
        }


# ---- the pipeline ----------------------------------------------------------------------


class _Subject(NamedTuple):
    """Who the messages talk about: a tool call or the structured final answer. Cheap to
    build, because the valid fast path builds one per call and never reads the texts."""

    name: str
    is_output: bool = False

    @property
    def label(self) -> str:
        return f"Final answer ({self.name})" if self.is_output else f"Tool {self.name!r}"

    @property
    def retry(self) -> str:
        if self.is_output:
            return "Answer again with one JSON object that matches the required schema."
        return "Send the call again with corrected JSON arguments."


def prepare_arguments(
    call: ToolCall, registry: ToolRegistry, *, truncated: bool = False
) -> ArgumentResult:
    """Run one tool call's arguments through the pipeline. Never raises."""
    tool = registry.get(call.name)
    pre: tuple[str, ...] = ()
    if tool is None:
        name, name_repair = _resolve_name(call.name, registry)
        tool = registry.get(name) if name is not None else None
        if tool is None:
            return _unknown_tool(call, registry)
        pre = (name_repair,) if name_repair else ()
    subject = _Subject(tool.name)
    if truncated:
        return _truncated(subject, call.arguments, pre, call.name)
    return _guarded(subject, tool.args_model, call.arguments, pre, call.name)


def prepare_output(
    text: str, output_type: type[BaseModel], *, truncated: bool = False
) -> ArgumentResult:
    """The same pipeline for a structured final answer (an instance of `output_type`)."""
    name = output_type.__name__
    subject = _Subject(name, is_output=True)
    if truncated:
        return _truncated(subject, text, (), name)
    return _guarded(subject, output_type, text, (), name)


def _guarded(
    subject: _Subject, model: type[BaseModel], raw: str, pre: tuple[str, ...], requested: str
) -> ArgumentResult:
    try:
        return _process(subject, model, raw, pre, requested)
    except Exception as exc:  # a bug here must degrade to a re-ask, never crash the turn
        problem = f"the arguments could not be processed ({type(exc).__name__})"
        return _invalid(subject, raw, pre, (problem,), requested)


def _process(
    subject: _Subject, model: type[BaseModel], raw: str, pre: tuple[str, ...], requested: str
) -> ArgumentResult:
    # Fast path: valid JSON straight into pydantic's parser. pydantic accepts NaN and
    # Infinity, which no model means, so text that may hold them takes the careful path.
    if "NaN" not in raw and "Infinity" not in raw:
        instance, _ = _checked_validate(model, raw)
        if instance is not None:
            return _success(subject, instance, raw, pre, requested)
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return _validate(subject, model, value, raw, pre, requested)

    parsed: Parsed = parse_arguments(raw)
    repairs = (*pre, *parsed.repairs)
    if parsed.problem is not None:
        return _invalid(
            subject,
            raw,
            repairs,
            (f"the arguments are not valid JSON: {parsed.problem}",),
            requested,
        )
    value = parsed.value
    if value is None:
        what = "empty" if not raw.strip() else "null"
        if not _required_fields(model):
            return _validate(
                subject, model, {}, raw, (*repairs, f"read {what} arguments as {{}}"), requested
            )
        return _invalid(
            subject,
            raw,
            repairs,
            (f"the arguments are {what}; required: {_describe_required(model)}",),
            requested,
        )
    if not isinstance(value, dict):
        return _invalid(
            subject,
            raw,
            repairs,
            (f"the arguments must be a JSON object, got {_json_kind(value)}",),
            requested,
        )
    return _validate(subject, model, value, raw, repairs, requested)


def _validate(
    subject: _Subject,
    model: type[BaseModel],
    value: dict[str, Any],
    raw: str,
    repairs: tuple[str, ...],
    requested: str,
) -> ArgumentResult:
    done = list(repairs)
    unwrapped = _unwrap(value, model, subject.name)
    if unwrapped is not None:
        value, note = unwrapped
        done.append(note)
    # Each round may decode one JSON container given as a string; bounded by the data.
    for _ in range(32):
        instance, errors = _checked_validate(model, value)
        if instance is not None:
            return _success(subject, instance, raw, tuple(done), requested)
        decoded = _decode_stringified(value, errors)
        if decoded is None:
            return _invalid(
                subject, raw, tuple(done), _describe_errors(errors, value, model), requested
            )
        done.append(decoded)
    return _invalid(subject, raw, tuple(done), ("the arguments nest too deeply",), requested)


# Strict-mode errors that lax mode would paper over with a coercion no user wants:
# true/false accepted as 1/0 for a number.
_NUMBER_ERRORS = {"int_type", "float_type", "decimal_type"}


def _checked_validate(
    model: type[BaseModel], data: str | dict[str, Any]
) -> tuple[BaseModel | None, list[ErrorDetails]]:
    """Validate JSON text or a parsed dict with pydantic's lax coercions ("1" -> 1,
    1.0 -> 1, "true" -> True) minus a boolean taken as a number. Strict first: valid
    input pays for one validation, and the strict errors say which coercions lax used."""
    try:
        if isinstance(data, str):
            return model.model_validate_json(data, strict=True), []
        return model.model_validate(data, strict=True), []
    except ValidationError as exc:
        strict_errors = exc.errors(include_url=False)
    try:
        if isinstance(data, str):
            instance = model.model_validate_json(data)
        else:
            instance = model.model_validate(data)
    except ValidationError as exc:
        return None, exc.errors(include_url=False)
    loose = [
        e for e in strict_errors if e["type"] in _NUMBER_ERRORS and isinstance(e["input"], bool)
    ]
    return (None, loose) if loose else (instance, [])


def _success(
    subject: _Subject, instance: BaseModel, raw: str, repairs: tuple[str, ...], requested: str
) -> ArgumentResult:
    return ArgumentResult(
        tool_name=subject.name,
        status="repaired" if repairs else "ok",
        arguments=instance,
        repairs=repairs,
        error=None,
        raw=raw,
        requested_name=requested,
    )


def _invalid(
    subject: _Subject,
    raw: str,
    repairs: tuple[str, ...],
    problems: tuple[str, ...],
    requested: str,
) -> ArgumentResult:
    return ArgumentResult(
        tool_name=subject.name,
        status="invalid",
        arguments=None,
        repairs=repairs,
        error=f"{subject.label}: {'; '.join(problems)}. {subject.retry}",
        raw=raw,
        problems=problems,
        requested_name=requested,
    )


def _truncated(
    subject: _Subject, raw: str, repairs: tuple[str, ...], requested: str
) -> ArgumentResult:
    problem = "the output hit the token limit while the arguments were being written"
    return ArgumentResult(
        tool_name=subject.name,
        status="truncated",
        arguments=None,
        repairs=repairs,
        error=f"{subject.label}: {problem}, so nothing was executed. Send it again with "
        "shorter arguments (split long content over several calls).",
        raw=raw,
        problems=(problem,),
        requested_name=requested,
    )


# ---- tool names --------------------------------------------------------------------------


def _resolve_name(name: str, registry: ToolRegistry) -> tuple[str | None, str | None]:
    """The registered name the model meant, when there is exactly one, and the repair."""
    if registry.get(name) is not None:
        return name, None
    candidate = name.strip().strip("`'\"")
    for prefix in _NAME_PREFIXES:
        if candidate.startswith(prefix):
            candidate = candidate[len(prefix) :]
            break
    if registry.get(candidate) is None:
        folded = [n for n in registry.names if n.casefold() == candidate.casefold()]
        if len(folded) != 1:
            return None, None
        candidate = folded[0]
    return candidate, f"read tool name {name!r} as {candidate!r}"


def _closest(name: str, names: list[str]) -> str | None:
    """The registered name most like `name`, if any is close enough. A name may also
    match the start of a longer one ("pyhton" -> "python_exec"): models shorten names."""
    wanted = name.strip().casefold()
    best, best_score = None, 0.6
    for candidate in names:
        folded = candidate.casefold()
        score = difflib.SequenceMatcher(None, wanted, folded).ratio()
        if len(wanted) >= 3 and len(folded) > len(wanted):
            head = difflib.SequenceMatcher(None, wanted, folded[: len(wanted)]).ratio()
            score = max(score, head - 0.05)  # a whole-name match wins a tie
        if score >= best_score and (best is None or score > best_score):
            best, best_score = candidate, score
    return best


def _unknown_tool(call: ToolCall, registry: ToolRegistry) -> ArgumentResult:
    names = registry.names
    if names:
        listed = ", ".join(names[:_MAX_LISTED_TOOLS])
        if len(names) > _MAX_LISTED_TOOLS:
            listed += f" and {len(names) - _MAX_LISTED_TOOLS} more"
        available = f"Available tools: {listed}."
    else:
        available = "No tools are available."
    suggestion = _closest(call.name, names)
    problem = f"There is no tool {call.name!r}."
    error = f"{problem} {available}"
    if call.name.strip() in _PARALLEL_WRAPPERS:
        error += " Call the tools directly; several tool calls may be sent in one response."
    elif suggestion is not None:
        error += f" Did you mean {suggestion!r}?"
    return ArgumentResult(
        tool_name=call.name,
        status="unknown_tool",
        arguments=None,
        repairs=(),
        error=error,
        raw=call.arguments,
        problems=(problem.rstrip("."),),
        requested_name=call.name,
        suggestion=suggestion,
    )


# ---- schema-aware repairs ------------------------------------------------------------------


def _unwrap(
    value: dict[str, Any], model: type[BaseModel], name: str
) -> tuple[dict[str, Any], str] | None:
    """{"arguments": {...}} or {"name": "tool", "parameters": {...}} when the tool has no
    such parameter: the real arguments are the inner object."""
    fields = model.model_fields
    keys = set(value)
    for key in _WRAPPER_KEYS:
        if key in fields or key not in keys:
            continue
        named = keys - {key} == {"name"} and "name" not in fields and value["name"] == name
        if not keys - {key} or named:
            inner = value[key]
            if isinstance(inner, str):
                try:
                    inner = json.loads(inner)
                except (ValueError, RecursionError):
                    return None
            if isinstance(inner, dict):
                return inner, f"unwrapped arguments nested under {key!r}"
    return None


_CONTAINER_ERRORS = {
    "list_type",
    "tuple_type",
    "set_type",
    "frozen_set_type",
    "dict_type",
    "model_type",
    "model_attributes_type",
    "dataclass_type",
}


def _decode_stringified(value: dict[str, Any], errors: list[ErrorDetails]) -> str | None:
    """Where a field wants an array or object and got a string holding exactly that JSON
    (`{"domain": "[\\"vacuum\\"]"}`), decode it in place. Strict JSON only: a string that
    needs repair to become a container was more likely meant as text."""
    for err in errors:
        text = err.get("input")
        if err["type"] not in _CONTAINER_ERRORS or not isinstance(text, str):
            continue
        if text.strip()[:1] not in ("[", "{"):
            continue
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not isinstance(decoded, (list, dict)):
            continue
        path = _data_path(value, err["loc"], keep_last=False)
        parent: Any = value
        for step in path[:-1]:
            parent = parent[step]
        if path and parent[path[-1]] is text:
            parent[path[-1]] = decoded
            kind = "array" if isinstance(decoded, list) else "object"
            return f"field {_render_path(path)!r}: decoded a JSON {kind} given as a string"
    return None


def _data_path(value: Any, loc: tuple[Any, ...], *, keep_last: bool) -> list[str | int]:
    """The part of a pydantic error location that addresses the data (dropping union
    member tags such as 'list[str]'); the last element is kept for missing/extra keys."""
    path: list[str | int] = []
    here = value
    for i, step in enumerate(loc):
        if isinstance(here, dict) and step in here:
            here = here[step]
            path.append(step)
        elif isinstance(here, list) and isinstance(step, int) and 0 <= step < len(here):
            here = here[step]
            path.append(step)
        elif keep_last and i == len(loc) - 1 and isinstance(step, (str, int)):
            path.append(step)
    return path


def _render_path(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


# ---- describing what was wrong -------------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_parsing": "a number",
    "decimal_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean (true or false)",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "frozen_set_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dataclass_type": "an object",
    "none_required": "null",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_type": "a date (YYYY-MM-DD)",
    "datetime_parsing": "an ISO 8601 date-time",
    "datetime_type": "an ISO 8601 date-time",
    "uuid_parsing": "a UUID",
    "uuid_type": "a UUID",
}


def _got(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _describe_errors(
    errors: list[ErrorDetails], value: dict[str, Any], model: type[BaseModel]
) -> tuple[str, ...]:
    # One line per field: a union reports one error per member; they merge into "or".
    by_field: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for err in errors:
        kind = err["type"]
        path = _data_path(value, err["loc"], keep_last=kind in ("missing", "extra_forbidden"))
        where = _render_path(path)
        if kind == "missing":
            top = model.model_fields.get(str(path[0])) if len(path) == 1 else None
            hint = f" ({_describe_type(top.annotation)})" if top is not None else ""
            by_field.setdefault(where, []).append(f"required but missing{hint}")
            continue
        if kind == "extra_forbidden":
            params = ", ".join(model.model_fields) if len(path) == 1 else ""
            suffix = f" (parameters: {params})" if params else ""
            by_field.setdefault(where, []).append(f"not a parameter{suffix}")
            continue
        if kind in ("literal_error", "enum"):
            expected = f"one of {err.get('ctx', {}).get('expected', '?')}"
        else:
            expected = _EXPECTED.get(kind) or _lower_message(err["msg"])
        by_field.setdefault(where, []).append(expected)
        got[where] = _got(err.get("input"))
    lines: list[str] = []
    for where, expectations in by_field.items():
        unique = list(dict.fromkeys(expectations))
        subject = f"field {where!r}" if where else "the arguments"
        if where in got:
            lines.append(f"{subject}: expected {' or '.join(unique)}, got {got[where]}")
        else:
            lines.append(f"{subject}: {'; '.join(unique)}")
    if len(lines) > _MAX_LISTED_PROBLEMS:
        extra = len(lines) - _MAX_LISTED_PROBLEMS
        lines = [*lines[:_MAX_LISTED_PROBLEMS], f"and {extra} more problem(s)"]
    return tuple(lines)


def _lower_message(msg: str) -> str:
    # "Input should be greater than 0" -> "a value that should be greater than 0"
    for lead in ("Input should be ", "Value should be "):
        if msg.startswith(lead):
            return "a value that should be " + msg[len(lead) :]
    return msg[:1].lower() + msg[1:]


def _describe_type(annotation: Any) -> str:
    """A short, model-readable name for a parameter's type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _describe_type(typing.get_args(annotation)[0])
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [_describe_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    simple = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}
    if annotation in simple:
        return simple[annotation]
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset):
        return "an array"
    if (
        origin is dict
        or annotation is dict
        or (isinstance(annotation, type) and issubclass(annotation, BaseModel))
    ):
        return "an object"
    return "a value"


def _required_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.is_required()]


def _describe_required(model: type[BaseModel]) -> str:
    return ", ".join(
        f"{name} ({_describe_type(model.model_fields[name].annotation)})"
        for name in _required_fields(model)
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return f"a string ({_got(value)})"
    if isinstance(value, bool):
        return f"a boolean ({_got(value)})"
    return f"a number ({_got(value)})" if isinstance(value, (int, float)) else "a scalar"


# ---- re-ask budget and exhaustion ----------------------------------------------------------


@dataclass
class ArgumentPolicy:
    """Per-agent configuration of re-asks and of what happens when they run out."""

    max_reasks_per_tool: int = 2
    max_reasks_per_turn: int = 4
    # "explain": the model gets a structured failure to explain to the user;
    # "message": the turn ends with `exhausted_message`, shown to the user as is.
    on_exhausted: Literal["message", "explain"] = "explain"
    exhausted_message: str = (
        "Sorry, I could not complete this request: a tool could not be called correctly. "
        "Please try again or rephrase it."
    )

    def __post_init__(self) -> None:
        if self.max_reasks_per_tool < 0 or self.max_reasks_per_turn < 0:
            raise ValueError("re-ask limits cannot be negative")
        if self.on_exhausted not in ("message", "explain"):
            raise ValueError(
                f"on_exhausted must be 'message' or 'explain', not {self.on_exhausted!r}"
            )


@dataclass
class ReaskBudget:
    """Re-asks left in one turn. Pure counting, no clock: a replayed turn that feeds the
    same results in the same order reaches the same decisions."""

    policy: ArgumentPolicy
    _per_tool: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _turn: int = field(default=0, init=False, repr=False)

    def allow(self, tool_name: str) -> bool:
        """Consume one re-ask for `tool_name` if both limits allow it."""
        if self._turn >= self.policy.max_reasks_per_turn:
            return False
        if self._per_tool.get(tool_name, 0) >= self.policy.max_reasks_per_tool:
            return False
        self._per_tool[tool_name] = self._per_tool.get(tool_name, 0) + 1
        self._turn += 1
        return True

    def used(self, tool_name: str | None = None) -> int:
        """Re-asks consumed for one tool, or in the whole turn."""
        return self._turn if tool_name is None else self._per_tool.get(tool_name, 0)

    def decide(self, result: ArgumentResult) -> Literal["execute", "reask", "exhausted"]:
        """The engine's whole decision for one result (consumes a re-ask when it says so)."""
        if result.executable:
            return "execute"
        return "reask" if self.allow(result.budget_key) else "exhausted"


@dataclass(frozen=True)
class ExhaustedOutcome:
    """What to do when a call is still not executable and no re-ask is left.

    `tool_result` always answers the call (as an error result) so the history stays
    well-formed. In "message" mode the engine ends the turn with `user_message`; in
    "explain" mode the model gets one more step to explain the failure to the user."""

    mode: Literal["message", "explain"]
    tool_result: str
    user_message: str | None


def render_exhausted(result: ArgumentResult) -> str:
    """The structured failure the model receives when attempts are exhausted."""
    what = {
        "unknown_tool": f"There is no tool {result.tool_name!r}",
        "truncated": f"The call to {result.tool_name!r} was cut off at the token limit",
    }.get(result.status, f"The arguments for {result.tool_name!r} were still invalid")
    last = "; ".join(result.problems) or (result.error or "unknown problem")
    return (
        f"[not executed] {what} after the allowed corrections; the call was not run. "
        f"Last problem: {last}. Do not call it again in this turn: tell the user what could "
        "not be done and why."
    )


def exhausted_outcome(result: ArgumentResult, policy: ArgumentPolicy) -> ExhaustedOutcome:
    text = render_exhausted(result)
    if policy.on_exhausted == "message":
        return ExhaustedOutcome("message", text, policy.exhausted_message)
    return ExhaustedOutcome("explain", text, None)
