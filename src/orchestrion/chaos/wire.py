"""The two wire protocols the chaos server speaks, as plain functions over dicts.

Each protocol parses a request body into a ModelRequest (so scripts see the same shapes
the engine does) and renders an `Answer` as a JSON body or as SSE frames, plus
provider-shaped error bodies and error events.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrion.models.messages import Message, ModelRequest, ToolCall, ToolSpec


@dataclass
class AnswerCall:
    id: str
    name: str
    arguments: str


@dataclass
class Answer:
    """One model answer, provider-neutral. `finish` is orchestrion's reason."""

    model: str
    text: str = ""
    calls: list[AnswerCall] = field(default_factory=list)
    finish: str = "stop"
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Frames:
    """SSE frames (already encoded), and the index of the first frame that finishes the
    answer (so a truncated stream can be cut just before it)."""

    frames: list[str]
    finish_index: int


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    raise ValueError("content must be a string or a list of parts")


def _sse(data: Any, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


# ---- OpenAI Chat Completions -----------------------------------------------------------


class OpenAIWire:
    name: Literal["openai"] = "openai"
    _FINISH = {"stop": "stop", "tool_calls": "tool_calls", "length": "length"}
    _ERROR_TYPES = {
        400: ("invalid_request_error", None),
        429: ("requests", "rate_limit_exceeded"),
        500: ("server_error", None),
        503: ("server_error", None),
        529: ("server_error", "overloaded"),
    }

    @staticmethod
    def parse(body: dict[str, Any]) -> ModelRequest:
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise ValueError("'messages' must be a non-empty list")
        messages: list[Message] = []
        for m in raw_messages:
            role = m.get("role")
            content = _text_of(m.get("content"))
            if role in ("system", "developer"):
                messages.append(Message.system(content))
            elif role == "user":
                messages.append(Message.user(content))
            elif role == "assistant":
                calls = tuple(
                    ToolCall(
                        id=str(c.get("id", "")),
                        name=str(c["function"]["name"]),
                        arguments=str(c["function"].get("arguments") or ""),
                    )
                    for c in m.get("tool_calls") or ()
                )
                messages.append(Message.assistant(content or None, calls))
            elif role == "tool":
                messages.append(
                    Message(role="tool", content=content, tool_call_id=m.get("tool_call_id"))
                )
            else:
                raise ValueError(f"unknown role {role!r}")
        tools = tuple(
            ToolSpec(
                name=t["function"]["name"],
                description=t["function"].get("description") or "",
                parameters=t["function"].get("parameters") or {"type": "object"},
            )
            for t in body.get("tools") or ()
        )
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        return ModelRequest(messages=tuple(messages), tools=tools, max_tokens=max_tokens)

    @staticmethod
    def wants_usage(body: dict[str, Any]) -> bool:
        options = body.get("stream_options") or {}
        return bool(isinstance(options, dict) and options.get("include_usage"))

    def render_json(self, a: Answer, call_number: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": a.text or None, "refusal": None}
        if a.calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in a.calls
            ]
        return {
            "id": f"chatcmpl-chaos{call_number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": a.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._FINISH.get(a.finish, "stop"),
                }
            ],
            "usage": self._usage(a),
        }

    @staticmethod
    def _usage(a: Answer) -> dict[str, int]:
        return {
            "prompt_tokens": a.input_tokens,
            "completion_tokens": a.output_tokens,
            "total_tokens": a.input_tokens + a.output_tokens,
        }

    def render_frames(
        self, a: Answer, call_number: int, *, chunk_size: int, include_usage: bool
    ) -> Frames:
        base: dict[str, Any] = {
            "id": f"chatcmpl-chaos{call_number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": a.model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return _sse(data)

        frames = [chunk({"role": "assistant", "content": ""})]
        frames += [chunk({"content": p}) for p in pieces(a.text, chunk_size)]
        for i, c in enumerate(a.calls):
            frames.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": c.id,
                                "type": "function",
                                "function": {"name": c.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            frames += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                for p in pieces(c.arguments, chunk_size)
            ]
        finish_index = len(frames)
        frames.append(chunk({}, self._FINISH.get(a.finish, "stop")))
        if include_usage:
            frames.append(_sse({**base, "choices": [], "usage": self._usage(a)}))
        frames.append(_sse("[DONE]"))
        return Frames(frames, finish_index)

    def error_body(
        self, status: int, message: str, error_type: str | None = None, code: str | None = None
    ) -> dict[str, Any]:
        default_type, default_code = self._ERROR_TYPES.get(status, ("server_error", None))
        return {
            "error": {
                "message": message,
                "type": error_type or default_type,
                "param": None,
                "code": code or default_code,
            }
        }

    def error_frame(self, message: str, error_type: str | None) -> str:
        return _sse(self.error_body(500, message, error_type or "server_error"))

    def malformed_frame(self, call_number: int) -> str:
        # valid SSE framing around JSON cut mid-string
        head = f'{{"id":"chatcmpl-chaos{call_number}",'
        return f'data: {head}"choices":[{{"delta":{{"content":"Hel\n\n'

    def malformed_body(self, call_number: int) -> bytes:
        return f'{{"id": "chatcmpl-chaos{call_number}", "object": "chat.completion", "choi'.encode()


# ---- Anthropic Messages ----------------------------------------------------------------


class AnthropicWire:
    name: Literal["anthropic"] = "anthropic"
    _STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
    _ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        500: "api_error",
        503: "api_error",
        529: "overloaded_error",
    }

    @staticmethod
    def parse(body: dict[str, Any]) -> ModelRequest:
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise ValueError("messages: field required (a non-empty list)")
        if not isinstance(body.get("max_tokens"), int):
            raise ValueError("max_tokens: field required")
        messages: list[Message] = []
        system = _text_of(body.get("system"))
        if system:
            messages.append(Message.system(system))
        for m in raw_messages:
            role = m.get("role")
            content = m.get("content")
            if role not in ("user", "assistant"):
                raise ValueError(f"messages: unexpected role {role!r}")
            if isinstance(content, str):
                messages.append(Message(role=role, content=content))
                continue
            if not isinstance(content, list):
                raise ValueError("content must be a string or a list of blocks")
            texts: list[str] = []
            calls: list[ToolCall] = []
            for block in content:
                kind = block.get("type")
                if kind == "text":
                    texts.append(str(block.get("text", "")))
                elif kind == "tool_use" and role == "assistant":
                    calls.append(
                        ToolCall(
                            id=str(block.get("id", "")),
                            name=str(block.get("name", "")),
                            arguments=json.dumps(block.get("input") or {}),
                        )
                    )
                elif kind == "tool_result" and role == "user":
                    messages.append(
                        Message(
                            role="tool",
                            content=_text_of(block.get("content")),
                            tool_call_id=block.get("tool_use_id"),
                            is_error=bool(block.get("is_error")),
                        )
                    )
            if role == "assistant":
                messages.append(Message.assistant("".join(texts) or None, tuple(calls)))
            elif texts:
                messages.append(Message.user("".join(texts)))
        tools = tuple(
            ToolSpec(
                name=t["name"],
                description=t.get("description") or "",
                parameters=t.get("input_schema") or {"type": "object"},
            )
            for t in body.get("tools") or ()
        )
        return ModelRequest(messages=tuple(messages), tools=tools, max_tokens=body["max_tokens"])

    @staticmethod
    def wants_usage(body: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def _input(arguments: str) -> dict[str, Any]:
        # tool_use.input must be an object on this wire: broken arguments travel as a
        # string inside one, so they stay visible (and still fail validation) downstream.
        try:
            value = json.loads(arguments) if arguments else {}
        except ValueError:
            return {"_raw_arguments": arguments}
        return value if isinstance(value, dict) else {"_raw_arguments": arguments}

    def _message(self, a: Answer, call_number: int) -> dict[str, Any]:
        return {
            "id": f"msg_chaos{call_number}",
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
        }

    def render_json(self, a: Answer, call_number: int) -> dict[str, Any]:
        message = self._message(a, call_number)
        content: list[dict[str, Any]] = []
        if a.text:
            content.append({"type": "text", "text": a.text})
        for c in a.calls:
            content.append(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": self._input(c.arguments)}
            )
        message["content"] = content
        message["stop_reason"] = self._STOP.get(a.finish, "end_turn")
        return message

    def render_frames(
        self, a: Answer, call_number: int, *, chunk_size: int, include_usage: bool
    ) -> Frames:
        start = self._message(a, call_number)
        start["usage"] = {"input_tokens": a.input_tokens, "output_tokens": 1}
        frames = [_sse({"type": "message_start", "message": start}, "message_start")]
        index = 0
        if a.text:
            frames.append(
                _sse(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
            )
            frames.append(_sse({"type": "ping"}, "ping"))
            frames += [
                _sse(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": p},
                    },
                    "content_block_delta",
                )
                for p in pieces(a.text, chunk_size)
            ]
            frames.append(
                _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            )
            index += 1
        for c in a.calls:
            frames.append(
                _sse(
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": c.id,
                            "name": c.name,
                            "input": {},
                        },
                    },
                    "content_block_start",
                )
            )
            # The real API opens with an empty partial_json; clients must tolerate it.
            for p in ["", *pieces(c.arguments, chunk_size)]:
                frames.append(
                    _sse(
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": p},
                        },
                        "content_block_delta",
                    )
                )
            frames.append(
                _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            )
            index += 1
        finish_index = len(frames)
        frames.append(
            _sse(
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self._STOP.get(a.finish, "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": a.output_tokens},
                },
                "message_delta",
            )
        )
        frames.append(_sse({"type": "message_stop"}, "message_stop"))
        return Frames(frames, finish_index)

    def error_body(
        self, status: int, message: str, error_type: str | None = None, code: str | None = None
    ) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": error_type or self._ERROR_TYPES.get(status, "api_error"),
                "message": message,
            },
        }

    def error_frame(self, message: str, error_type: str | None) -> str:
        body = self.error_body(529, message, error_type or "overloaded_error")
        return _sse(body, "error")

    def malformed_frame(self, call_number: int) -> str:
        head = '{"type":"message_start","message":'
        return f'event: message_start\ndata: {head}{{"id":"msg_chaos{call_number}\n\n'

    def malformed_body(self, call_number: int) -> bytes:
        head = f'{{"id": "msg_chaos{call_number}", "type": "message", '
        return (head + '"content": [{"type": "te').encode()


Wire = OpenAIWire | AnthropicWire
