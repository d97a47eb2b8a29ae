"""The server with telemetry on and in-memory sinks (for bench_telemetry): the providers exactly as
the server configures them (`telemetry.install_providers`: a batching span processor, metrics
without exemplars unless asked), around an exporter that only counts the spans and a metric
reader that is never collected."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class CountingExporter(SpanExporter):
    """In memory: counts the spans (keeping them all would grow for the whole benchmark)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def main() -> int:
    from mcp_server import telemetry
    from mcp_server.cli import main as serve

    telemetry.install_providers(CountingExporter(), InMemoryMetricReader())
    return serve(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
