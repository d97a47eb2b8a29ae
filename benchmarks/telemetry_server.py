"""The server with telemetry on and in-memory sinks (for bench_telemetry): the SDK's tracer provider
with a batching span processor and a meter provider with a manual reader, nothing exported."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class CountingExporter(SpanExporter):
    """In memory: counts the spans (keeping them all would grow for the whole benchmark)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def main() -> int:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    from mcp_server import telemetry
    from mcp_server.cli import main as serve

    telemetry.set_enabled(True)
    return serve(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
