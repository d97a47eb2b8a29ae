"""The one module that configures telemetry.

Code depends on the OpenTelemetry API only (the SDK's server middleware already opens a span per
message). Here, at start-up and only when asked, an SDK tracer provider and an exporter are installed.
Disabled (the default), nothing is imported and spans are no-ops. Exporters write to stderr, never
stdout, which in stdio mode carries protocol only.
"""

from __future__ import annotations

import sys

from mcp_server.config import Settings


def configure_telemetry(settings: Settings) -> None:
    if settings.otel_exporter == "none":
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from mcp_server import __version__

    provider = TracerProvider(
        resource=Resource.create({"service.name": "mcp-code-tools", "service.version": __version__})
    )
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)
