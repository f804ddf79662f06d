"""An OTLP/HTTP receiver for tests: a real HTTP server on loopback that decodes what the
exporters send with the official opentelemetry-proto messages, like a collector would."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def decode_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: decode_value(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


def decode_attributes(attributes: Any) -> dict[str, Any]:
    return {kv.key: decode_value(kv.value) for kv in attributes}


@dataclass
class ReceivedEvent:
    name: str
    time: float
    attributes: dict[str, Any]


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start: float
    end: float
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    resource: dict[str, Any]
    scope: str

    def event_names(self) -> list[str]:
        return [e.name for e in self.events]


@dataclass
class ReceivedPoint:
    metric: str
    unit: str
    attributes: dict[str, Any]
    value: float  # a sum's value, or a histogram's sum
    count: int  # a histogram's count (1 for a sum)


@dataclass
class Receiver:
    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    # Metric points per export request: cumulative, so the last one has every total.
    metric_exports: list[list[ReceivedPoint]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # paths, in order
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return True
            time.sleep(0.02)
        return False

    @property
    def points(self) -> list[ReceivedPoint]:
        return self.metric_exports[-1] if self.metric_exports else []

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def add_traces(self, body: bytes) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = decode_attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    span = ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex() or None,
                        name=s.name,
                        kind=s.kind,
                        start=s.start_time_unix_nano / 1e9,
                        end=s.end_time_unix_nano / 1e9,
                        status_code=s.status.code,
                        attributes=decode_attributes(s.attributes),
                        events=[
                            ReceivedEvent(
                                e.name, e.time_unix_nano / 1e9, decode_attributes(e.attributes)
                            )
                            for e in s.events
                        ],
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                    with self.lock:
                        self.spans.append(span)
        return ExportTraceServiceResponse().SerializeToString()

    def add_metrics(self, body: bytes) -> bytes:
        request = ExportMetricsServiceRequest.FromString(body)
        points: list[ReceivedPoint] = []
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for p in getattr(metric, kind).data_points:
                        if kind == "histogram":
                            value, count = p.sum, p.count
                        else:
                            value = p.as_double if p.HasField("as_double") else p.as_int
                            count = 1
                        points.append(
                            ReceivedPoint(
                                metric.name,
                                metric.unit,
                                decode_attributes(p.attributes),
                                value,
                                count,
                            )
                        )
        with self.lock:
            self.metric_exports.append(points)
        return ExportMetricsServiceResponse().SerializeToString()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            encoding = (self.headers.get("content-encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            with receiver.lock:
                receiver.requests.append(self.path)
            if self.path == "/v1/traces":
                answer = receiver.add_traces(body)
            elif self.path == "/v1/metrics":
                answer = receiver.add_metrics(body)
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
