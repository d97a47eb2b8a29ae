"""The one module that configures telemetry, and the helpers the code records it with.

Code depends on the OpenTelemetry API only. When telemetry is on, `TelemetryMiddleware` (in
place of the MCP SDK's span middleware, whose span it reproduces) opens a span per message,
named `{mcp.method.name} {target}` (`tools/call lint`), with the MCP semantic-convention
attributes, `mcp.session.id` and a result's `run_id`, parented on a `traceparent` in the
request's `params._meta`, and records the `mcp.server.operation.duration` histogram; off, the
SDK's middleware runs against the API's no-op tracer, as it always did. `connection_closed` records
`mcp.server.session.duration`; observable instruments report runs in flight, queue depth, pool
sizes, cache hit ratio, run contexts alive. Child spans (queue wait, zygote lease and fork, check
phases) come from `span()` / `past_span()`, which are no-ops costing a flag test when it is off.

Configuration, at start-up only: the setting `otel_exporter` (none|console|otlp) turns it on and
picks the exporter; the standard variables refine it: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`,
`OTEL_METRICS_EXPORTER` (otlp|console|none, per signal), `OTEL_EXPORTER_OTLP_*` (endpoint,
headers, timeout, protocol), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`. Exporters write to stderr or the network, never
stdout (stdio carries protocol only); spans are batched, metrics read periodically, both flushed
at exit. An OTLP endpoint that is down costs log lines on stderr (the exporter backs off), never a
tool call: export runs in the SDK's own threads.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace  # the MCP SDK imports these already

from mcp_server.config import Settings
from mcp_server.connections import current_connection

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

    from mcp_server.api import AppState

logger = logging.getLogger("mcp_server.telemetry")

SCOPE = "mcp-code-tools"
MAX_SESSIONS = 10_000
"""Session start times kept for `mcp.server.session.duration` (a session that never says goodbye
must not grow the map for ever)."""
# The conventions' buckets for mcp.server.operation.duration / session.duration (seconds).
OPERATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
SHUTDOWN_S = 5.0
"""At most this long at exit for the last export (a collector that is down must not hold the exit)."""
SESSION_BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200, 28800, 86400)
MAX_ATTRIBUTE_SETS = 256
"""Attribute sets of the operation histogram kept for reuse (method x version x tool x error)."""


@dataclass
class _State:
    enabled: bool = False
    app_refs: list[weakref.ref[AppState]] = field(default_factory=list)

    def apps(self) -> list[AppState]:
        live = [app for ref in self.app_refs if (app := ref()) is not None]
        if len(live) != len(self.app_refs):
            self.app_refs = [weakref.ref(app) for app in live]
        return live

    sessions: dict[str, float] = field(default_factory=dict)
    shutdown: list[Any] = field(default_factory=list)


_state = _State()
tracer = trace.get_tracer(SCOPE)


class Instruments:
    """The histograms, created on first use (the metrics API costs ~15 ms of import: not at start-up)."""

    def __init__(self) -> None:
        from opentelemetry import metrics

        self.meter = metrics.get_meter(SCOPE)
        self.operation_duration = self.meter.create_histogram(
            "mcp.server.operation.duration",
            unit="s",
            description="Duration of an MCP request or notification as observed on the receiver",
            explicit_bucket_boundaries_advisory=OPERATION_BUCKETS,
        )
        self.session_duration = self.meter.create_histogram(
            "mcp.server.session.duration",
            unit="s",
            description="Duration of an MCP session as observed on the server",
            explicit_bucket_boundaries_advisory=SESSION_BUCKETS,
        )
        self.queue_wait = self.meter.create_histogram(
            "mcp_code_tools.queue.wait", unit="s", description="Time a run waited for a run slot"
        )


_instruments: list[Instruments] = []


def instruments() -> Instruments:
    if not _instruments:
        _instruments.append(Instruments())
    return _instruments[0]


def enabled() -> bool:
    return _state.enabled


def set_enabled(on: bool) -> None:
    """For tests that install their own (in-memory) SDK providers."""
    _state.enabled = on


# --- recording ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[trace.Span]:
    """A child span of the current one; a no-op when telemetry is off."""
    if not _state.enabled:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def past_span(name: str, duration_s: float, attributes: Mapping[str, Any] | None = None) -> None:
    """A span for something that already happened (a wait measured by its owner)."""
    if not _state.enabled:
        return
    end = time.time_ns()
    started = tracer.start_span(name, start_time=end - int(duration_s * 1e9), attributes=dict(attributes or {}))
    started.end(end_time=end)
    if name == "queue wait":
        instruments().queue_wait.record(duration_s)


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """On the current span (the request's), when telemetry is on."""
    if _state.enabled:
        trace.get_current_span().set_attributes(dict(attributes))


def trace_env() -> dict[str, str]:
    """`TRACEPARENT` (and `TRACESTATE`) of the current span, for a child process's environment,
    so a project's own instrumentation joins the trace. Works off too: a client's `traceparent`
    is still passed on."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key.upper(): value for key, value in carrier.items() if key in ("traceparent", "tracestate")}


# --- the server's middleware and sessions ------------------------------------------------------------


def _session_id(ctx: Any) -> str | None:
    headers = getattr(getattr(ctx, "request", None), "headers", None)
    if headers is not None:
        value = headers.get("mcp-session-id")
        if value:
            return str(value)
    info = current_connection.get()
    return info.id if info is not None else None


AttributeKey = tuple[str, Any, str | None, str | None]


def _parent(meta: Mapping[str, Any] | None) -> Any:
    """The trace context of a request's `_meta` (`traceparent`, `tracestate`), or None (the
    current context is the parent) when there is none or it is not valid."""
    if not meta or "traceparent" not in meta:
        return None
    try:
        context = propagate.extract(meta)
    except (ValueError, TypeError):
        return None
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _failed(span: trace.Span, exc: Exception) -> str:
    """A message that failed, on its span as the SDK's middleware puts it; returns its error.type.
    (The MCP SDK and pydantic are imported here, not with the module: the CLI imports this module,
    and `--help` must not load the SDK.)"""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS
    from pydantic import ValidationError

    if isinstance(exc, MCPError):
        error = str(exc.error.code)
        span.set_attributes({"error.type": error, "rpc.response.status_code": error})
        span.set_status(trace.StatusCode.ERROR, exc.error.message)
    elif isinstance(exc, ValidationError):  # the wire answer's sanitized form: its text holds client input
        error = str(INVALID_PARAMS)
        span.set_attributes({"error.type": error, "rpc.response.status_code": error})
        span.set_status(trace.StatusCode.ERROR, "Invalid request parameters")
    else:
        error = type(exc).__qualname__
        span.set_attribute("error.type", error)
        span.record_exception(exc)
        span.set_status(trace.StatusCode.ERROR, str(exc))
    return error


class TelemetryMiddleware:
    """The server span of every message, and the operation histogram: one middleware, installed
    in place of the SDK's span middleware when telemetry is on.

    The span is the SDK middleware's (name `{mcp.method.name} {target}`, kind SERVER, the
    conventions' attributes, parented on the `traceparent` of `_meta`, the same error handling),
    with the session id among its attributes from the start, and the run_id and ruff engine of
    a tool's result. It runs on every message, so it keeps to the minimum: one span started
    with all it knows, one histogram point whose attribute set is built once per (method,
    protocol version, tool, error) and reused (the SDK copies what it keeps).
    """

    def __init__(self) -> None:
        self._histogram = instruments().operation_duration
        self._attribute_sets: dict[AttributeKey, dict[str, Any]] = {}

    def _attributes(self, key: AttributeKey) -> dict[str, Any]:
        attributes = self._attribute_sets.get(key)
        if attributes is None:
            method, version, tool, error = key
            attributes = {"mcp.method.name": method, "mcp.protocol.version": version}
            if tool is not None:
                attributes["gen_ai.tool.name"] = tool
            if error is not None:
                attributes["error.type"] = error
            if len(self._attribute_sets) < MAX_ATTRIBUTE_SETS:  # a client names any tool it likes
                self._attribute_sets[key] = attributes
        return attributes

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        started = time.perf_counter()
        method, version = ctx.method, ctx.protocol_version
        name = ctx.params.get("name") if ctx.params else None
        target = name if isinstance(name, str) else None
        attributes: dict[str, Any] = {"mcp.method.name": method, "mcp.protocol.version": version}
        if ctx.request_id is not None:
            attributes["jsonrpc.request.id"] = str(ctx.request_id)
        tool = None
        if method == "tools/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
            if target is not None:
                attributes["gen_ai.tool.name"] = tool = target
        elif method == "prompts/get" and target is not None:
            attributes["gen_ai.prompt.name"] = target
        session = _session_id(ctx)
        if session is not None:
            attributes["mcp.session.id"] = session
            if session not in _state.sessions and len(_state.sessions) < MAX_SESSIONS:
                _state.sessions[session] = time.monotonic()
        span = tracer.start_span(
            f"{method} {target}" if target else method,
            context=_parent(ctx.meta),
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        error: str | None = None
        try:
            result = await call_next(ctx)
            if isinstance(result, dict):
                structured, is_error = result.get("structuredContent"), result.get("isError") is True
            else:
                structured, is_error = getattr(result, "structured_content", None), getattr(result, "is_error", False)
            if isinstance(structured, dict):
                run_id, engine = structured.get("run_id"), structured.get("engine")
                if isinstance(run_id, str):
                    span.set_attribute("mcp_code_tools.run_id", run_id)
                if isinstance(engine, str):
                    span.set_attribute("mcp_code_tools.ruff.engine", engine)
            if is_error and method == "tools/call":
                error = "tool_error"
                span.set_attribute("error.type", error)
                span.set_status(trace.StatusCode.ERROR)
            return result
        except Exception as exc:
            error = _failed(span, exc)
            raise
        except BaseException as exc:  # cancelled: no error on the span (as the SDK's), but in the histogram
            error = type(exc).__qualname__
            raise
        finally:
            otel_context.detach(token)
            span.end()
            self._histogram.record(time.perf_counter() - started, self._attributes((method, version, tool, error)))


def install(server: Any, app: AppState) -> None:
    """Called once per `CodeToolsServer`: our span middleware in place of the SDK's (it makes the
    same span, see `TelemetryMiddleware`), our gauges over `app`."""
    if not _state.enabled:
        return
    sdk_spans = [m for m in server.middleware if type(m).__name__ == "OpenTelemetryMiddleware"]
    position = server.middleware.index(sdk_spans[0]) if sdk_spans else 0
    for middleware in sdk_spans:
        server.middleware.remove(middleware)
    server.middleware.insert(position, TelemetryMiddleware())
    _state.app_refs.append(weakref.ref(app))
    _observables()


def connection_closed(owner: str | None) -> None:
    """A connection or HTTP session ended (its run owner): its duration, if its start was seen."""
    if owner is None:
        return
    session = owner.removeprefix("http-session:")
    started = _state.sessions.pop(session, None)
    if started is not None and _state.enabled:
        instruments().session_duration.record(time.monotonic() - started)


# --- the readings: one source for the observable instruments and /readyz -------------------------------


@dataclass(frozen=True)
class Readings:
    """The server's counters and gauges at one moment, read from where they live (the run slots,
    the run store, the redactor, the services' `status()`): the observable instruments observe
    these, and /readyz shows them, so both always agree (never a second count)."""

    runs_in_flight: int
    run_capacity: int
    queue_depth: int
    max_queued: int
    run_contexts_alive: int
    run_context_evictions: int
    redactions: int
    pools: dict[str, dict[str, int]]
    """Per warm pool (ruff servers, pytest zygotes): size, starts, restarts, evictions."""
    caches: dict[str, dict[str, float]]
    """Per result cache: hits, misses, hit_ratio (only once it was looked up)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs_in_flight": self.runs_in_flight,
            "queue_depth": self.queue_depth,
            "run_contexts_alive": self.run_contexts_alive,
            "run_context_evictions": self.run_context_evictions,
            "redactions": self.redactions,
            "pools": self.pools,
            "caches": self.caches,
        }


_POOL_FIELDS = (("size", ("size",)), ("starts", ("started",)), ("restarts", ("restarts", "rebuilds")))


def _pool_reading(status: Mapping[str, Any]) -> dict[str, int] | None:
    if "size" not in status and "started" not in status:
        return None
    out: dict[str, int] = {}
    for name, keys in _POOL_FIELDS:
        value = next((status[k] for k in keys if isinstance(status.get(k), int)), None)
        if value is not None:
            out[name] = value
    if isinstance(status.get("evictions"), int) and "started" in status:
        out["evictions"] = status["evictions"]
    return out


def _cache_reading(status: Mapping[str, Any]) -> dict[str, float] | None:
    hits, misses = status.get("hits"), status.get("misses", 0)
    if not isinstance(hits, int) or not isinstance(misses, int):
        return None
    out: dict[str, float] = {"hits": hits, "misses": misses}
    if hits + misses:
        out["hit_ratio"] = hits / (hits + misses)
    return out


def service_statuses(app: AppState) -> dict[str, dict[str, Any]]:
    """The `status()` of every started service that answers synchronously with a dict."""
    out: dict[str, dict[str, Any]] = {}
    for key, service in app.services.items():
        status = getattr(service, "status", None)
        if not callable(status):
            continue
        try:
            value = status()
        except Exception:
            continue
        if inspect.iscoroutine(value):  # an async status(): /readyz awaits it, an instrument cannot
            value.close()
            continue
        if isinstance(value, dict):
            out[key] = value
    return out


def read(app: AppState, statuses: Mapping[str, Mapping[str, Any]] | None = None) -> Readings:
    """The readings of `app`; `statuses`: the services' `status()` when the caller has them already."""
    slots = app.executor.slots
    if statuses is None:
        statuses = service_statuses(app)
    pools = {key: pool for key, status in statuses.items() if (pool := _pool_reading(status)) is not None}
    caches = {key: cache for key, status in statuses.items() if (cache := _cache_reading(status)) is not None}
    return Readings(
        runs_in_flight=slots.running,
        run_capacity=slots.capacity,
        queue_depth=slots.waiting,
        max_queued=slots.max_queued,
        run_contexts_alive=len(app.runs),
        run_context_evictions=int(getattr(app.runs, "evictions", 0)),
        redactions=int(getattr(app.redactor, "redactions", 0)),
        pools=pools,
        caches=caches,
    )


# --- observable instruments (over the readings) ----------------------------------------------------------

_observed = False
Points = list[tuple[float, dict[str, str]]]


def _observe(points: Any) -> Any:
    from opentelemetry.metrics import Observation

    def callback(options: CallbackOptions) -> list[Observation]:
        try:
            return [Observation(value, attrs) for value, attrs in points([read(app) for app in _state.apps()])]
        except Exception:  # an instrument must never break the reader
            logger.debug("telemetry observation failed", exc_info=True)
            return []

    return callback


def _total(name: str) -> Any:
    """A server-wide value: the sum over the apps (one per server process, in practice)."""

    def points(readings: list[Readings]) -> Points:
        return [(sum(getattr(r, name) for r in readings), {})] if readings else []

    return _observe(points)


def _per_pool(name: str) -> Any:
    def points(readings: list[Readings]) -> Points:
        return [(p[name], {"pool": key}) for r in readings for key, p in r.pools.items() if name in p]

    return _observe(points)


def _cache_ratio(readings: list[Readings]) -> Points:
    return [(c["hit_ratio"], {"cache": key}) for r in readings for key, c in r.caches.items() if "hit_ratio" in c]


def _observables() -> None:
    global _observed
    if _observed:
        return
    _observed = True
    meter = instruments().meter
    gauge = meter.create_observable_gauge
    counter = meter.create_observable_counter
    gauge(
        "mcp_code_tools.runs.in_flight",
        [_total("runs_in_flight")],
        unit="{run}",
        description="Runs (tests, ruff CLI) holding a run slot",
    )
    gauge(
        "mcp_code_tools.queue.depth", [_total("queue_depth")], unit="{run}", description="Runs waiting for a run slot"
    )
    gauge(
        "mcp_code_tools.run_contexts.alive",
        [_total("run_contexts_alive")],
        unit="{run}",
        description="Run contexts kept (results pageable with get_run)",
    )
    gauge(
        "mcp_code_tools.pool.size",
        [_per_pool("size")],
        unit="{process}",
        description="Warm processes per pool (ruff servers, pytest zygotes)",
    )
    counter(
        "mcp_code_tools.pool.starts",
        [_per_pool("starts")],
        unit="{process}",
        description="Warm processes started per pool",
    )
    counter(
        "mcp_code_tools.pool.restarts",
        [_per_pool("restarts")],
        unit="{process}",
        description="Warm processes restarted or rebuilt per pool",
    )
    counter(
        "mcp_code_tools.pool.evictions",
        [_per_pool("evictions")],
        unit="{process}",
        description="Warm processes retired to make room for another key",
    )
    gauge(
        "mcp_code_tools.cache.hit_ratio",
        [_observe(_cache_ratio)],
        unit="1",
        description="Result-cache hits / lookups",
    )
    counter(
        "mcp_code_tools.run_contexts.evictions",
        [_total("run_context_evictions")],
        unit="{run}",
        description="Run contexts evicted to make room",
    )
    counter(
        "mcp_code_tools.redactions",
        [_total("redactions")],
        unit="{secret}",
        description="Secrets redacted from output",
    )


# --- configuration (start-up) ------------------------------------------------------------------------


def _exporter_choice(variable: str, default: str) -> str:
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return default
    first = value.split(",")[0].strip()
    if first not in ("otlp", "console", "none"):
        logger.warning("%s=%s is not supported here (otlp, console, none): using %s", variable, value, default)
        return default
    return first


def _otlp_protocol() -> str:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower()
    if protocol == "grpc":
        try:
            importlib.import_module("opentelemetry.exporter.otlp.proto.grpc")
        except ImportError:
            logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc: using http")
            return "http/protobuf"
    return protocol


def _span_exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    if _otlp_protocol() == "grpc":
        return importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter").OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(out=sys.stderr)
    if _otlp_protocol() == "grpc":
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.metric_exporter")
        return module.OTLPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    from mcp_server import __version__

    attributes = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = SCOPE
    return Resource.create(attributes)


def configure_telemetry(settings: Settings) -> bool:
    """Install the SDK's providers and exporters when telemetry is on; returns whether it is.

    Off (the default), nothing of the SDK is imported and every helper here is a flag test.
    """
    if settings.otel_exporter == "none":
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    traces = _exporter_choice("OTEL_TRACES_EXPORTER", settings.otel_exporter)
    metric_kind = _exporter_choice("OTEL_METRICS_EXPORTER", settings.otel_exporter)
    span_exporter = _span_exporter(traces) if traces != "none" else None
    reader = None
    if metric_kind != "none":
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_metric_exporter(metric_kind))
    install_providers(span_exporter, reader)
    if _state.enabled:
        atexit.register(shutdown)
    return _state.enabled


def install_providers(span_exporter: Any | None, metric_reader: Any | None) -> None:
    """The SDK's providers as the server sets them up, around the given sinks (the benchmark's
    in-memory ones come through here too, so it measures this configuration).

    Spans: a batching processor (export in the SDK's thread). Metrics: no exemplars unless
    `OTEL_METRICS_EXEMPLAR_FILTER` asks for them; the SDK's default (trace-based) would sample
    one for the operation histogram on every request, inside its span.
    """
    resource = _resource()
    if span_exporter is not None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
        _state.shutdown.append(tracer_provider)
    if metric_reader is not None:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider

        exemplars = None if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else AlwaysOffExemplarFilter()
        meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader], exemplar_filter=exemplars)
        metrics.set_meter_provider(meter_provider)
        _state.shutdown.append(meter_provider)
    _state.enabled = span_exporter is not None or metric_reader is not None


def shutdown(timeout_s: float = SHUTDOWN_S) -> None:
    """Flush and stop the exporters at exit, in parallel and bounded: an endpoint that is down
    (the OTLP exporter retries with backoff) delays the exit by `timeout_s` at most."""
    providers, _state.shutdown = _state.shutdown, []
    threads = [threading.Thread(target=_shutdown_one, args=(p,), daemon=True) for p in providers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        logger.warning("telemetry: the exporters did not finish within %.0f s at exit; the rest is dropped", timeout_s)


def _shutdown_one(provider: Any) -> None:
    try:
        provider.shutdown()
    except Exception:
        logger.warning("telemetry shutdown failed", exc_info=True)
