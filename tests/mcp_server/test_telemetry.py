"""Telemetry: spans and metrics read through the SDK's in-memory exporter and reader; the OTLP/HTTP
wire path to a small receiver in the test; an OTLP endpoint that is down; off by default, where
nothing of the SDK is imported; the console exporter writes to stderr only."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from mcp_server import telemetry
from tests.conftest import open_memory, settings_env
from tests.tools.test_runner.conftest import write_project

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_run", "arguments": {"run_id": "x"}}}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


# --- in-memory SDK, installed once per process, recording only inside the `otel` fixture ------------


class Switch(Sampler):
    on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "on inside the otel fixture"


SWITCH = Switch()
EXPORTER = InMemorySpanExporter()
READER = InMemoryMetricReader()
_installed: list[bool] = []


@pytest.fixture
def otel() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    if not _installed:
        provider = TracerProvider(sampler=SWITCH)
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
        _installed.append(True)
    EXPORTER.clear()
    SWITCH.on = True
    telemetry.set_enabled(True)
    try:
        yield EXPORTER, READER
    finally:
        SWITCH.on = False
        telemetry.set_enabled(False)
        EXPORTER.clear()


def named(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found: list[Any] = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


PROJECT_TEST = """
import os, pathlib

def test_sees_the_trace():
    pathlib.Path("traceparent.txt").write_text(os.environ.get("TRACEPARENT", ""))
"""


@pytest.mark.anyio
async def test_request_spans_attributes_children_and_metrics(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    exporter, reader = otel
    root = write_project(tmp_path / "proj", {"tests/test_t.py": PROJECT_TEST, "src/m.py": "import os\n"})
    tracer = trace.get_tracer("test")
    with anyio.fail_after(120):
        async with open_memory(root, tmp_path) as client:
            with tracer.start_as_current_span("the agent's step") as step:
                checked = await client.call_tool("check", {"phases": ["lint", "tests"]})
            assert checked.structured_content is not None
            run_id = checked.structured_content["run_id"]
            missing = await client.call_tool("get_run", {"run_id": "run_nope"})
            assert missing.is_error
            # Observable instruments read the live server: pool sizes, runs, queue, run contexts.
            pools = {dict(p.attributes)["pool"]: p.value for p in points(reader, "mcp_code_tools.pool.size")}
            assert pools and all(size >= 1 for size in pools.values()), pools
            assert [p.value for p in points(reader, "mcp_code_tools.runs.in_flight")] == [0]
            assert [p.value for p in points(reader, "mcp_code_tools.queue.depth")] == [0]
            assert points(reader, "mcp_code_tools.run_contexts.alive")[0].value >= 1
            starts = {dict(p.attributes)["pool"]: p.value for p in points(reader, "mcp_code_tools.pool.starts")}
            assert sum(starts.values()) >= 1
            assert set(starts) == {dict(p.attributes)["pool"] for p in points(reader, "mcp_code_tools.pool.evictions")}
            ratios = [p.value for p in points(reader, "mcp_code_tools.cache.hit_ratio")]
            assert ratios and all(0.0 <= r <= 1.0 for r in ratios)  # lint looked its files up
            assert [p.value for p in points(reader, "mcp_code_tools.redactions")] == [0]
    spans = exporter.get_finished_spans()

    # One server span per request, named `{mcp.method.name} {target}`, with the conventions' attributes.
    call = named(spans, "tools/call check")
    assert call.kind == SpanKind.SERVER
    attrs = dict(call.attributes or {})
    assert attrs["mcp.method.name"] == "tools/call" and attrs["gen_ai.tool.name"] == "check"
    assert str(attrs["mcp.session.id"]).startswith("memory-")
    assert attrs["jsonrpc.request.id"] and attrs["mcp.protocol.version"]
    assert attrs["mcp_code_tools.run_id"] == run_id
    assert "error.type" not in attrs
    # The client's trace context (its span, under the agent's step) is the parent.
    assert call.context is not None and step.get_span_context().trace_id == call.context.trace_id
    assert call.parent is not None and call.parent.span_id != 0

    # An isError result is an error on the span.
    failed = dict(named(spans, "tools/call get_run").attributes or {})
    assert failed["error.type"] == "tool_error"

    # Child spans: each check phase, and under the tests phase the queue wait, the lease, the fork.
    by_id = {s.context.span_id: s for s in spans if s.context is not None}

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    for phase in ("lint", "tests"):
        child = named(spans, f"check {phase}")
        assert ancestors(child)[0] == "tools/call check"
        assert dict(child.attributes or {})["mcp_code_tools.check.status"] in ("passed", "failed")
    for name in ("queue wait", "zygote lease", "zygote fork"):
        assert "check tests" in ancestors(named(spans, name)), name

    # The test process got the trace context in TRACEPARENT.
    traceparent = (root / "traceparent.txt").read_text()
    assert traceparent.split("-")[1] == format(call.context.trace_id, "032x")

    # Metrics: the conventions' histograms and ours.
    durations = points(reader, "mcp.server.operation.duration")
    tools = {dict(p.attributes).get("gen_ai.tool.name"): p for p in durations}
    assert tools["check"].count >= 1 and tools["get_run"].count >= 1
    assert dict(tools["get_run"].attributes)["error.type"] == "tool_error"
    assert any(dict(p.attributes).get("mcp.method.name") == "initialize" for p in durations)
    assert sum(p.count for p in points(reader, "mcp.server.session.duration")) >= 1
    assert sum(p.count for p in points(reader, "mcp_code_tools.queue.wait")) >= 1


@pytest.mark.anyio
async def test_one_server_span_per_message_and_json_rpc_errors(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    exporter, reader = otel
    with anyio.fail_after(60):
        async with open_memory(tmp_path, tmp_path) as client:
            with pytest.raises(MCPError):
                await client.call_tool("no_such_tool", {})
            await client.list_tools()
    server_spans = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert [s.name for s in server_spans].count("tools/call no_such_tool") == 1  # ours replaced the SDK's
    assert [s.name for s in server_spans].count("tools/list") == 1
    unknown = named(server_spans, "tools/call no_such_tool")
    attrs = dict(unknown.attributes or {})
    assert attrs["error.type"] == attrs["rpc.response.status_code"] == str(INVALID_PARAMS)
    assert attrs["gen_ai.operation.name"] == "execute_tool" and str(attrs["mcp.session.id"]).startswith("memory-")
    assert unknown.status.status_code == StatusCode.ERROR
    durations = points(reader, "mcp.server.operation.duration")
    assert any(dict(p.attributes).get("error.type") == str(INVALID_PARAMS) for p in durations)
    listed = dict(named(server_spans, "tools/list").attributes or {})
    assert "error.type" not in listed and listed["mcp.method.name"] == "tools/list"


# --- configuration, in a server process ------------------------------------------------------------


def serve_once(
    tmp_path: Path,
    extra_env: dict[str, str],
    *args: str,
    call: tuple[str, dict[str, Any]] = ("get_run", {"run_id": "x"}),
) -> subprocess.CompletedProcess[str]:
    """One tools/call with a traceparent in its _meta, over stdio to a server process, then EOF."""
    params: dict[str, Any] = {"name": call[0], "arguments": call[1]}
    params["_meta"] = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    lines = [INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {**CALL, "params": params}]
    env = {k: v for k, v in settings_env(tmp_path, tmp_path, stdio_eof_grace_s=60).items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        input="".join(json.dumps(m) + "\n" for m in lines),
        capture_output=True,
        text=True,
        env={**env, **extra_env},
        timeout=60,
        check=False,
    )


def replies(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    messages = [json.loads(line) for line in proc.stdout.splitlines()]  # all JSON-RPC: protocol only
    return [m for m in messages if "id" in m]  # the answers (notifications, e.g. log messages, aside)


class Receiver(http.server.ThreadingHTTPServer):
    """A collector-like OTLP/HTTP endpoint: keeps the bodies POSTed to /v1/traces and /v1/metrics."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_otlp_http_export_reaches_a_receiver(tmp_path: Path, receiver: Receiver) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "under-test"}
    proc = serve_once(tmp_path, env, "--otel-exporter", "otlp")
    assert proc.returncode == 0, proc.stderr
    assert [r.get("id") for r in replies(proc)] == [1, 2]  # stdout: protocol only
    spans = []
    for body in receiver.bodies.get("/v1/traces", []):
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            assert service == "under-test"
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    call = [s for s in spans if s.name == "tools/call get_run"]
    assert len(call) == 1, [s.name for s in spans]
    # The traceparent of the request's _meta is the parent.
    assert call[0].trace_id.hex() == TRACE_ID and call[0].parent_span_id.hex() == PARENT_ID
    attrs = {a.key: a.value.string_value for a in call[0].attributes}
    assert attrs["error.type"] == "tool_error" and attrs["mcp.session.id"].startswith("stdio-")
    names = set()
    for body in receiver.bodies.get("/v1/metrics", []):
        request = ExportMetricsServiceRequest.FromString(body)
        names |= {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"mcp.server.operation.duration", "mcp.server.session.duration"} <= names


def test_an_otlp_endpoint_that_is_down_does_not_affect_tools(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    proc = serve_once(tmp_path, env, "--otel-exporter", "otlp")
    assert proc.returncode == 0, proc.stderr
    answers = replies(proc)
    assert [r.get("id") for r in answers] == [1, 2]
    assert answers[1]["result"]["isError"] is True  # the tool answered as usual (an unknown run)
    assert "Failed to export" in proc.stderr or "Connection refused" in proc.stderr or "export" in proc.stderr.lower()


def test_per_signal_variables_and_the_sdk_switch(tmp_path: Path) -> None:
    # Traces to the console (stderr), metrics off; OTEL_SDK_DISABLED wins over the setting.
    proc = serve_once(
        tmp_path, {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"}, "--otel-exporter", "otlp"
    )
    assert proc.returncode == 0, proc.stderr
    assert [r.get("id") for r in replies(proc)] == [1, 2]
    assert "tools/call get_run" in proc.stderr and TRACE_ID in proc.stderr
    off = serve_once(tmp_path, {"OTEL_SDK_DISABLED": "true"}, "--otel-exporter", "console")
    assert off.returncode == 0 and "tools/call get_run" not in off.stderr


def test_off_the_clients_trace_context_still_reaches_the_test_process(tmp_path: Path) -> None:
    write_project(tmp_path, {"tests/test_t.py": PROJECT_TEST})
    proc = serve_once(tmp_path, {}, call=("run_tests", {}))
    assert proc.returncode == 0, proc.stderr
    answer = replies(proc)[1]["result"]
    assert answer["structuredContent"]["status"] == "passed", answer
    assert (tmp_path / "traceparent.txt").read_text().split("-")[1] == TRACE_ID


EXEMPLARS = """
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from mcp_server import telemetry

reader = InMemoryMetricReader()
telemetry.install_providers(InMemorySpanExporter(), reader)
with trace.get_tracer("t").start_as_current_span("request"):
    telemetry.instruments().operation_duration.record(0.01, {"mcp.method.name": "ping"})
data = reader.get_metrics_data()
points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points]
print(telemetry.enabled(), len(points), sum(len(p.exemplars) for p in points))
"""


@pytest.mark.parametrize(("variable", "exemplars"), [(None, "0"), ("trace_based", "1")])
def test_the_servers_providers_keep_no_exemplars_unless_asked(variable: str | None, exemplars: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if variable is not None:
        env["OTEL_METRICS_EXEMPLAR_FILTER"] = variable
    out = subprocess.run([sys.executable, "-c", EXEMPLARS], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "1", exemplars]


def test_operation_attribute_sets_are_built_once_and_bounded() -> None:
    middleware = telemetry.TelemetryMiddleware()
    first = middleware._attributes(("tools/call", "2025-11-25", "lint", None))
    assert first == {"mcp.method.name": "tools/call", "mcp.protocol.version": "2025-11-25", "gen_ai.tool.name": "lint"}
    assert middleware._attributes(("tools/call", "2025-11-25", "lint", None)) is first
    assert middleware._attributes(("ping", "2025-11-25", None, "-32601")) == {
        "mcp.method.name": "ping",
        "mcp.protocol.version": "2025-11-25",
        "error.type": "-32601",
    }
    for i in range(telemetry.MAX_ATTRIBUTE_SETS + 50):  # tool names come from clients: any number of them
        attributes = middleware._attributes(("tools/call", "2025-11-25", f"tool{i}", "tool_error"))
        assert attributes["gen_ai.tool.name"] == f"tool{i}" and attributes["error.type"] == "tool_error"
    assert len(middleware._attribute_sets) == telemetry.MAX_ATTRIBUTE_SETS


def test_off_by_default_imports_nothing_of_the_sdk(tmp_path: Path) -> None:
    code = (
        "import sys; from mcp_server.cli import main; import mcp_server.server, mcp_server.telemetry as t; "
        "print(t.enabled(), any(m.startswith(('opentelemetry.sdk', 'opentelemetry.metrics')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]  # neither the SDK nor the metrics API: start-up unchanged


def test_the_cli_imports_neither_the_mcp_sdk_nor_its_types_through_telemetry() -> None:
    # `--help` and start-up errors stay quick: the telemetry module the CLI imports leaves the
    # SDK (about a second of imports here) to the server.
    code = "import sys, mcp_server.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'mcp_types'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_console_exporter_writes_spans_to_stderr_only(tmp_path: Path) -> None:
    proc = serve_once(tmp_path, {}, "--otel-exporter", "console")
    assert proc.returncode == 0, proc.stderr
    assert [r.get("id") for r in replies(proc)] == [1, 2]  # protocol only on stdout
    assert "tools/call get_run" in proc.stderr  # the span, on stderr


# --- the lint engine's child spans: ruff server, ruff CLI, result cache -----------------------------


def children_of(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


@pytest.mark.anyio
async def test_lint_engine_spans_server_cli_and_cache_hit(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    """A single file goes to a warm `ruff server`, a tree through `ruff check`, and a repeat is a
    result-cache hit: each a child span of its `tools/call lint` span."""
    exporter, _ = otel
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("import os\n")
    (root / "pkg" / "b.py").write_text("import sys\nx = 1\n")
    with anyio.fail_after(120):
        async with open_memory(root, tmp_path) as client:
            calls = []
            for arguments in ({"paths": ["pkg/a.py"]}, {"paths": ["pkg"]}, {"paths": ["pkg"]}, {"paths": ["pkg/a.py"]}):
                exporter.clear()
                result = await client.call_tool("lint", arguments)
                assert not result.is_error and result.structured_content is not None, result
                calls.append((exporter.get_finished_spans(), result.structured_content["engine"]))

    def engine_spans(spans: Sequence[ReadableSpan]) -> dict[str, list[dict[str, Any]]]:
        call = named(spans, "tools/call lint")
        out: dict[str, list[dict[str, Any]]] = {}
        for child in children_of(spans, call):
            out.setdefault(child.name, []).append(dict(child.attributes or {}))
        return out

    single, single_engine = calls[0]
    assert single_engine == "ruff server"
    children = engine_spans(single)
    assert children["ruff server"] == [{"mcp_code_tools.ruff.engine": "server"}], children
    assert "ruff check" not in children and "result cache hit" not in children

    tree, tree_engine = calls[1]
    assert "ruff check" in tree_engine
    children = engine_spans(tree)
    modes = [a["mcp_code_tools.ruff.mode"] for a in children["ruff check"]]
    assert "lint" in modes, children  # `ruff check` over the files (and its discovery beside it)
    linted = next(a for a in children["ruff check"] if a["mcp_code_tools.ruff.mode"] == "lint")
    assert linted["mcp_code_tools.ruff.paths"] == 1  # b.py: a.py's result came from the cache
    assert all(
        a["mcp_code_tools.ruff.engine"] == "cli" and a["mcp_code_tools.ruff.stdin"] is False
        for a in children["ruff check"]
    )
    # a.py was linted by the single-file call (the cache key is the file's content): a hit already.
    assert children["result cache hit"] == [
        {"mcp_code_tools.ruff.engine": "cache", "mcp_code_tools.cache.hits": 1, "mcp_code_tools.cache.lookups": 2}
    ]

    again, _ = calls[2]
    children = engine_spans(again)
    assert children["result cache hit"][0]["mcp_code_tools.cache.hits"] == 2
    assert [a["mcp_code_tools.ruff.mode"] for a in children.get("ruff check", [])] in ([], ["discover"])
    assert "ruff server" not in children

    repeat, repeat_engine = calls[3]
    assert repeat_engine == "cache"
    children = engine_spans(repeat)
    assert set(children) == {"result cache hit"}, children


# --- /readyz and the instruments read the same source ------------------------------------------------


@pytest.mark.anyio
async def test_readyz_metrics_and_the_instruments_agree(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    """/readyz's metrics are `telemetry.read()`, which the observable instruments observe: with a run
    in flight, evicted run contexts, a redaction, a ruff server and result-cache hits, both say the same."""
    import gc

    from mcp.client import Client

    from mcp_server.health import probe_readiness
    from mcp_server.server import CodeToolsServer
    from mcp_server.transports.memory import memory_transport
    from tests.conftest import make_settings

    _, reader = otel
    (tmp_path / "a.py").write_text("import os\n")
    server = CodeToolsServer(make_settings(tmp_path, tmp_path, max_runs=2))
    gc.collect()  # servers of earlier tests: gone from the instruments' apps
    app = server.app
    with anyio.fail_after(60):
        async with Client(memory_transport(server), mode="legacy") as client:
            for _ in range(2):
                assert not (await client.call_tool("lint", {"paths": ["a.py"]})).is_error
            for _ in range(3):
                app.runs.finish(app.runs.create("someone", "lint"))
            app.redactor.redact("key: ghp_" + "b" * 36)
            async with app.executor.slots.slot():
                metrics = (await probe_readiness(app)).body["metrics"]
                observed = {
                    name: [(dict(p.attributes), p.value) for p in points(reader, f"mcp_code_tools.{name}")]
                    for name in (
                        "runs.in_flight",
                        "queue.depth",
                        "run_contexts.alive",
                        "run_contexts.evictions",
                        "redactions",
                        "pool.size",
                        "pool.starts",
                        "cache.hit_ratio",
                    )
                }
    assert metrics["runs_in_flight"] == 1 and metrics["run_context_evictions"] == 1 and metrics["redactions"] >= 1
    assert metrics["pools"]["ruff_pool"]["size"] == 1
    assert metrics["caches"]["code_analysis"]["hit_ratio"] == 0.5  # the second lint found the first's result
    assert observed["runs.in_flight"] == [({}, metrics["runs_in_flight"])]
    assert observed["queue.depth"] == [({}, metrics["queue_depth"])]
    assert observed["run_contexts.alive"] == [({}, metrics["run_contexts_alive"])]
    assert observed["run_contexts.evictions"] == [({}, metrics["run_context_evictions"])]
    assert observed["redactions"] == [({}, metrics["redactions"])]
    assert observed["pool.size"] == [({"pool": key}, p["size"]) for key, p in metrics["pools"].items()]
    assert observed["pool.starts"] == [({"pool": key}, p["starts"]) for key, p in metrics["pools"].items()]
    assert observed["cache.hit_ratio"] == [({"cache": k}, c["hit_ratio"]) for k, c in metrics["caches"].items()]


@pytest.mark.anyio
async def test_format_check_engine_spans(
    otel: tuple[InMemorySpanExporter, InMemoryMetricReader], tmp_path: Path
) -> None:
    """format_check: one file through a warm `ruff server`, a tree through `ruff format --check`,
    and a repeat from the result cache, each under its `tools/call format_check` span."""
    exporter, _ = otel
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("x=1\n")
    (root / "pkg" / "b.py").write_text("y = 2\n")
    found: list[dict[str, list[dict[str, Any]]]] = []
    with anyio.fail_after(120):
        async with open_memory(root, tmp_path) as client:
            for paths in (["pkg/a.py"], ["pkg"], ["pkg"]):
                exporter.clear()
                result = await client.call_tool("format_check", {"paths": paths})
                assert not result.is_error, result
                spans = exporter.get_finished_spans()
                children: dict[str, list[dict[str, Any]]] = {}
                for child in children_of(spans, named(spans, "tools/call format_check")):
                    children.setdefault(child.name, []).append(dict(child.attributes or {}))
                found.append(children)
    single, tree, again = found
    assert single["ruff server"] == [{"mcp_code_tools.ruff.engine": "server"}], single
    assert [a["mcp_code_tools.ruff.mode"] for a in tree["ruff format"]] == ["check"], tree
    assert tree["result cache hit"][0]["mcp_code_tools.cache.hits"] == 1  # a.py, from the single-file call
    assert again["result cache hit"][0]["mcp_code_tools.cache.hits"] == 2 and "ruff format" not in again
