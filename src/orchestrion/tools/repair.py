"""Turning the raw argument text a model produced into a JSON value, or a reason why not.

`parse_arguments` is the schema-free half of the argument pipeline (see arguments.py for
the other half). It is deliberately conservative: it repairs what has one plausible
reading (fences, prose around the JSON, trailing commas, single quotes, unquoted keys,
Python literals, double encoding, a server-duplicated object) and refuses what does not
(a cut-off object, a bare word where a value belongs, a broken escape, two different
objects). Syntax repair itself is json_repair's; this module decides what may be handed
to it and checks that what comes back is made only of values the model actually wrote.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import json_repair

__all__ = ["Parsed", "parse_arguments"]

# How many layers of "JSON inside a JSON string" we peel off before giving up.
_MAX_DECODE_DEPTH = 2

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JSON_LITERALS = {"true", "false", "null"}
_PYTHON_LITERALS = {"None", "True", "False"}
_NON_FINITE = {"NaN", "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "nan"}
# Chat-template tokens that leak into tool-call text: <|im_end|>, <|python_tag|>,
# DeepSeek's tokens between full-width bars (U+FF5C), <tool_call> wrappers, [TOOL_CALLS].
_TEMPLATE_TOKEN = re.compile(
    r"<\|[^<>|\n]{1,40}\|>|<\uff5c[^<>\uff5c\n]{1,40}\uff5c>|</?(?:tool_call|function_call|tools?)>"
    r"|\[/?TOOL_CALLS\]"
)
_FENCE = re.compile(r"```[A-Za-z0-9_+-]*")
# Escapes read left to right, so an escaped backslash (\\) is consumed as one pair.
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,4}|.)", re.S)


@dataclass(frozen=True)
class Parsed:
    """What the text held. `problem` is set when no value can be trusted; otherwise
    `value` is the JSON value (None for an empty text or `null`)."""

    value: Any = None
    repairs: tuple[str, ...] = ()
    problem: str | None = None


@dataclass
class _Scan:
    """A single pass over one JSON-looking value, tolerant of the usual LLM mistakes."""

    end: int = -1  # index just past the closing bracket of the top-level value
    cut_off: str | None = None  # why the value never ends
    strings: set[str] = field(default_factory=set)  # decoded quoted literals (keys and values)
    bare_keys: set[str] = field(default_factory=set)
    bare_values: list[str] = field(default_factory=list)
    bad_escapes: list[str] = field(default_factory=list)
    single_quotes: bool = False
    control_chars: bool = False  # raw line breaks or tabs inside strings
    missing_separators: int = 0  # a value or key right after a value, no comma or colon
    trailing_commas: int = 0
    comments: bool = False


# A double-quoted JSON string, escapes included (unrolled so long strings stay linear).
_DOUBLE_QUOTED = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _read_double_quoted(text: str, i: int) -> int:
    """Index of the closing quote of the string opening at i, or -1."""
    match = _DOUBLE_QUOTED.match(text, i)
    return match.end() - 1 if match else -1


def _read_single_quoted(text: str, i: int) -> int:
    """Closing quote of a single-quoted string: a ' followed by what may follow a value,
    so that an apostrophe inside ('it's') does not end it."""
    j = i + 1
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = j + 1
            while k < n and text[k] in " \t\r\n":
                k += 1
            if k == n or text[k] in ",:}]":
                return j
        j += 1
    return -1


def _decode_literal(body: str, scan: _Scan) -> str:
    if any(ord(ch) < 0x20 for ch in body):
        scan.control_chars = True
    # JSON defines \" \\ \/ \b \f \n \r \t and \uXXXX; \U, \x, \0, \u00e are not.
    bad = [
        m.group()
        for m in _ESCAPE.finditer(body)
        if not (m.group(1) in '"\\/bfnrt' or len(m.group(1)) == 5)
    ]
    if bad:
        scan.bad_escapes.extend(bad)
        return body
    try:
        # strict=False: a raw newline inside a string is a mistake with one reading.
        decoded: str = json.loads('"' + body + '"', strict=False)
    except ValueError:
        return body
    return decoded


def _scan(text: str, start: int) -> _Scan:
    scan = _Scan()
    stack: list[str] = []
    last = ""  # last significant character, to tell key position from value position
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == '"' or (c == "'" and last in ("", "{", "[", ",", ":")):
            if last in ('"', "w", "}", "]"):
                scan.missing_separators += 1
            close = _read_double_quoted(text, i) if c == '"' else _read_single_quoted(text, i)
            if close < 0:
                scan.cut_off = "a string is never closed"
                return scan
            body = text[i + 1 : close]
            if c == "'":
                scan.single_quotes = True
                # Re-express as a double-quoted body: \' is just ', a bare " needs escaping.
                body = re.sub(r'(?<!\\)"', '\\"', body.replace("\\'", "'"))
            scan.strings.add(_decode_literal(body, scan))
            last = '"'
            i = close + 1
            continue
        if c in "{[":
            if last in ('"', "w", "}", "]"):
                scan.missing_separators += 1
            stack.append(c)
        elif c in "}]":
            if last == ",":
                scan.trailing_commas += 1
            opener = "{" if c == "}" else "["
            # A mismatched closer closes everything up to its opener (json_repair does too).
            while stack and stack[-1] != opener:
                stack.pop()
            if stack:
                stack.pop()
            if not stack:
                scan.end = i + 1
                return scan
        elif c == "/" and text[i + 1 : i + 2] in ("/", "*"):
            scan.comments = True
            stop = text.find("\n" if text[i + 1] == "/" else "*/", i + 2)
            i = n if stop < 0 else stop + (1 if text[i + 1] == "/" else 2)
            continue
        elif c not in ",:":
            if last in ('"', "w", "}", "]"):
                scan.missing_separators += 1
            j = i
            while j < n and text[j] not in " \t\r\n,:{}[]\"'":
                j += 1
            j = max(j, i + 1)
            word = text[i:j]
            if stack and stack[-1] == "{" and last in ("{", ","):
                scan.bare_keys.add(word)
            elif word not in _JSON_LITERALS and not _NUMBER.fullmatch(word):
                scan.bare_values.append(word)
            last = "w"
            i = j
            continue
        last = c
        i += 1
    scan.cut_off = "an object or array is never closed" if stack else "no JSON value"
    return scan


def _excerpt(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strip_wrapping(text: str, repairs: list[str], where: str) -> str:
    """Remove fences and template tokens from text outside the JSON; report them."""
    tokens = _TEMPLATE_TOKEN.findall(text)
    if tokens:
        text = _TEMPLATE_TOKEN.sub(" ", text)
        repairs.append(f"removed leaked template token(s) {', '.join(dict.fromkeys(tokens))}")
    if _FENCE.search(text):
        text = _FENCE.sub(" ", text)
        if not any("code fence" in r for r in repairs):
            repairs.append("removed markdown code fence")
    text = text.strip()
    # Prose is only dropped when it cannot be part of the JSON (no brackets, no quotes).
    if text and not any(ch in text for ch in '{}[]"'):
        repairs.append(f"removed text {where} the JSON: {_excerpt(text)!r}")
    return text


def _checked_strings(value: Any, scan: _Scan) -> str | None:
    """The first string json_repair produced that the model never wrote as a quoted
    literal (a bare word it turned into a string, a mangled quote), else None."""
    if isinstance(value, str):
        return None if value in scan.strings else value
    if isinstance(value, list):
        for item in value:
            bad = _checked_strings(item, scan)
            if bad is not None:
                return bad
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in scan.strings and key not in scan.bare_keys:
                return str(key)
            bad = _checked_strings(item, scan)
            if bad is not None:
                return bad
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads_strict(text: str) -> Any:
    """json.loads without the NaN/Infinity extension (no model means those)."""
    return json.loads(text, parse_constant=_reject_constant)


def _parse_span(span: str, scan: _Scan) -> Parsed:
    """One complete JSON-looking value -> a value, repaired by json_repair if needed."""
    if scan.bad_escapes:
        escapes = ", ".join(dict.fromkeys(scan.bad_escapes))
        return Parsed(
            problem=f"invalid escape {escapes} in a string (write a literal backslash as \\\\)"
        )
    odd = [w for w in scan.bare_values if w not in _PYTHON_LITERALS]
    if odd:
        word = odd[0]
        if word in _NON_FINITE:
            return Parsed(problem=f"{word} is not a JSON number")
        return Parsed(
            problem=f"{_excerpt(word)} is not a JSON value (put strings in double quotes; "
            "use true, false, null)"
        )
    try:
        return Parsed(value=_loads_strict(span))
    except (ValueError, RecursionError):
        pass
    try:
        value, log = json_repair.repair_json(
            span, return_objects=True, logging=True, skip_json_loads=True
        )
    except Exception as exc:  # json_repair is third-party: any failure is "cannot repair"
        return Parsed(problem=f"not valid JSON and not repairable ({type(exc).__name__})")
    repairs: list[str] = []
    if scan.single_quotes:
        repairs.append("replaced single quotes with double quotes")
    if scan.bare_keys:
        repairs.append(f"quoted unquoted key(s) {', '.join(sorted(scan.bare_keys))}")
    if scan.trailing_commas:
        repairs.append("removed trailing comma(s)")
    python = [w for w in scan.bare_values if w in _PYTHON_LITERALS]
    if python:
        repairs.append(f"read Python literal(s) {', '.join(dict.fromkeys(python))} as JSON")
    if scan.comments:
        repairs.append("removed comments")
    if scan.control_chars:
        repairs.append("escaped raw line breaks or tabs inside strings")
    if scan.missing_separators:
        repairs.append("inserted missing comma(s) or colon(s)")
    if not repairs:
        detail = log[0]["text"] if log else "malformed syntax"
        repairs.append(f"repaired malformed JSON ({detail})")
    invented = _checked_strings(value, scan)
    if invented is not None:
        return Parsed(
            repairs=tuple(repairs),
            problem=f"the JSON is malformed around {_excerpt(invented)!r} and cannot be "
            "repaired unambiguously",
        )
    return Parsed(value=value, repairs=tuple(repairs))


def _json_start(text: str) -> int:
    """Where the JSON value begins: the first '{', or an '[' directly wrapping it."""
    brace = text.find("{")
    bracket = text.find("[")
    if brace < 0:
        return bracket
    if 0 <= bracket < brace and not text[bracket + 1 : brace].strip(" \t\r\n["):
        return bracket
    return brace


def parse_arguments(text: str, *, _depth: int = 0) -> Parsed:
    """Parse raw argument text; never raises."""
    stripped = text.strip().lstrip("\ufeff")
    if not stripped:
        return Parsed(value=None)
    repairs: list[str] = []

    # Double encoding: the whole thing is a JSON string whose content is JSON.
    if stripped[0] == '"':
        try:
            inner = _loads_strict(stripped)
        except (ValueError, RecursionError):
            inner = None
        if isinstance(inner, str):
            if _depth < _MAX_DECODE_DEPTH and _FENCE.sub("", inner).strip()[:1] in ("{", "["):
                sub = parse_arguments(inner, _depth=_depth + 1)
                return Parsed(
                    value=sub.value,
                    repairs=("decoded arguments that were JSON-encoded twice", *sub.repairs),
                    problem=sub.problem,
                )
            return Parsed(value=inner)

    start = _json_start(stripped)
    if start < 0:
        # No object or array: a scalar (null, 42, None) or plain prose.
        body = _strip_wrapping(stripped, [], "around")
        if body in _PYTHON_LITERALS:
            return Parsed(
                value={"None": None, "True": True, "False": False}[body],
                repairs=(f"read Python literal {body} as JSON",),
            )
        try:
            return Parsed(value=_loads_strict(body))
        except (ValueError, RecursionError):
            return Parsed(problem="no JSON object found")

    scan = _scan(stripped, start)
    if scan.cut_off is not None:
        return Parsed(problem=f"the JSON looks cut off ({scan.cut_off})")
    prefix = stripped[:start]
    if prefix.strip():
        _strip_wrapping(prefix, repairs, "before")
    span = stripped[start : scan.end]
    parsed = _parse_span(span, scan)
    if parsed.problem is not None:
        return Parsed(repairs=(*repairs, *parsed.repairs), problem=parsed.problem)
    repairs.extend(parsed.repairs)

    # What follows the value: copies of it (a server bug), stray closers, fences, prose.
    rest = stripped[scan.end :]
    copies = 0
    while True:
        rest = rest.lstrip()
        nxt = _json_start(rest)
        if nxt < 0 or rest[:nxt].strip(" \t\r\n`,;"):
            break
        again = _scan(rest, nxt)
        if again.cut_off is not None:
            return Parsed(
                repairs=tuple(repairs),
                problem=f"a second JSON value follows the first and looks cut off "
                f"({again.cut_off})",
            )
        other = _parse_span(rest[nxt : again.end], again)
        if other.problem is not None or other.value != parsed.value:
            return Parsed(
                repairs=tuple(repairs),
                problem="it holds several different JSON values; send exactly one JSON "
                "object per call",
            )
        copies += 1
        rest = rest[again.end :]
    if copies:
        repairs.append(
            f"removed {copies} duplicated cop{'y' if copies == 1 else 'ies'} of the arguments"
        )
    closers = re.match(r"[\s}\]]*", rest)
    if closers and closers.group().strip():
        repairs.append("removed extra closing bracket(s)")
        rest = rest[closers.end() :]
    leftover = _strip_wrapping(rest, repairs, "after")
    if any(ch in leftover for ch in '{}[]"'):
        return Parsed(
            repairs=tuple(repairs),
            problem=f"unexpected text after the JSON: {_excerpt(leftover)!r}",
        )
    return Parsed(value=parsed.value, repairs=tuple(repairs))
