"""OpenAI-compatible servers that send a tool call's `"arguments"` as a JSON object instead
of a string (seen from some local servers): the adapter accepts both, streamed and not,
over real HTTP on loopback, and hands the rest of orchestrion JSON text."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrion.models import Message, ModelRequest, ToolSpec, complete
from orchestrion.models.openai import OpenAIModel

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
# One call with the arguments as an object, one as the usual string, in one response.
CALLS: list[dict[str, Any]] = [
    {"id": "call_obj", "type": "function",
     "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}}},
    {"id": "call_str", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
]  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions: a whole chat.completion when the request says
    `x-mode: json` (a server that ignores `stream: true`), else an SSE stream."""

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        request = json.loads(self.rfile.read(length))
        assert request["stream"] is True
        if self.headers.get("x-mode") == "json":
            self._send("application/json", json.dumps(_completion()).encode())
            return
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
            *(
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **c}]}}]}
                for i, c in enumerate(CALLS)
            ),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send("text/event-stream", body.encode())

    def _send(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _completion() -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": "local",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": CALLS},
                "finish_reason": "tool_calls",
            }
        ],
    }


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["sse", "json"])
async def test_object_arguments_become_json_text(server_url: str, mode: str) -> None:
    model = OpenAIModel("local", api_key="k", base_url=server_url, headers={"x-mode": mode})
    try:
        request = ModelRequest(messages=(Message.user("Weather?"),), tools=(WEATHER,))
        response = await complete(model, request)
    finally:
        await model.aclose()
    first, second = response.message.tool_calls
    assert (first.id, first.name) == ("call_obj", "get_weather")
    assert json.loads(first.arguments) == {"city": "Zürich", "days": [1, 2]}
    assert "Zürich" in first.arguments  # kept as text, not escaped
    assert (second.id, second.arguments) == ("call_str", '{"city": "Paris"}')
    assert response.finish_reason == "tool_calls"
