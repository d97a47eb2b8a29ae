"""Fuzzing the transports with hostile messages (hypothesis): no crash, no hang, every request
gets an answer, nothing but protocol on the wire, and a normal call works afterwards.

The stdio part drives one real `python -m mcp_server` process through pipes with many batches;
each batch waits (bounded) for the answers to every request in it before the next is sent.

What counts as a request that must be answered is decided by the SDK's own envelope parser (the
oracle): a JSON object with `"jsonrpc": "2.0"`, a string or integer `id`, a string `method`, and
`params` absent or an object. Lines that are not such a request (invalid JSON, non-objects,
wrong versions, `params` of the wrong type, nesting deeper than the parser allows) must not
disturb anything, but are not answered: the SDK's stream transports drop them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mcp_types as types
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from tests.conftest import settings_env

DRAWN = 26  # messages drawn per batch; each is sent four ways (`variants`): 104 messages
BATCHES = 100  # plus one before `initialize`: 10,504 messages per transport

# no_cover (pytest-cov): every server fuzzed here is a `python -m mcp_server` process, which coverage does not
# measure; tracing this process's hypothesis generation and checking only cost CPU (~9 s of the suite's).
pytestmark = [
    pytest.mark.no_cover,
    pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"),
]
ANSWER_TIMEOUT_S = 60.0

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
METHODS = [
    "ping",
    "initialize",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "sampling/createMessage",
    "roots/list",
    "notifications/initialized",
    "notifications/progress",
    "notifications/roots/list_changed",
]

# --- hostile messages ----------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
huge_string = st.builds(lambda ch, n: ch * n, st.characters(), st.integers(min_value=1_000, max_value=100_000))
request_id = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.integers(min_value=2**64, max_value=2**300),  # ids too big for any 64-bit integer
    st.integers(min_value=-(2**300), max_value=-(2**64)),
    st.text(max_size=40),
    st.sampled_from([0, 1, "", "dup", "1"]),  # duplicates, within and across batches
    huge_string.map(lambda s: s[:20_000]),
)
bad_id = st.one_of(st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}))
method = st.one_of(st.sampled_from(["tools/call"] * 6 + METHODS), st.text(max_size=40))
tool_name = st.one_of(st.sampled_from(["get_run", "cancel_run"]), st.text(max_size=30))
tool_call_params = st.fixed_dictionaries(
    {"name": tool_name},
    optional={
        "arguments": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {"run_id": st.one_of(st.text(max_size=40), json_value)},
                optional={"section": json_value, "offset": json_value, "limit": json_value},
            ),
        ),
        "_meta": st.one_of(json_value, st.just(MODERN_META)),
    },
)
params = st.one_of(
    st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    tool_call_params,
    st.fixed_dictionaries({"cursor": json_value}),
    st.fixed_dictionaries({"uri": st.one_of(st.text(max_size=60), json_value)}),
    st.fixed_dictionaries(
        {"protocolVersion": st.one_of(st.sampled_from(["2025-06-18", "2025-11-25", "2026-07-28"]), json_value)},
        optional={"capabilities": json_value, "clientInfo": json_value},
    ),
    st.fixed_dictionaries({"_meta": st.just(MODERN_META)}),  # a 2026-era envelope on a legacy connection
    st.fixed_dictionaries({"blob": huge_string}),
    json_value,  # params of the wrong type: not an object
)


@st.composite
def envelope(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON-RPC-shaped object: mostly well formed, with any field wrong, missing or extra."""
    msg: dict[str, Any] = {}
    version = draw(st.sampled_from(["2.0"] * 8 + ["1.0", "2", 2.0, None, "missing"]))
    if version != "missing":
        msg["jsonrpc"] = version
    kind = draw(st.sampled_from(["request"] * 6 + ["notification", "response", "error", "bad-id"]))
    if kind in ("request", "response", "error"):
        msg["id"] = draw(request_id)
    elif kind == "bad-id":
        msg["id"] = draw(bad_id)
    if kind in ("request", "notification", "bad-id"):
        name = draw(method)
        msg["method"] = name
        if name == "tools/call":
            msg["params"] = draw(st.one_of(tool_call_params, params))
        elif draw(st.booleans()):
            msg["params"] = draw(params)
    elif kind == "response":
        msg["result"] = draw(json_value)
    else:
        msg["error"] = draw(st.one_of(json_value, st.fixed_dictionaries({"code": json_value, "message": json_value})))
    if draw(st.integers(0, 9)) == 0:
        msg[draw(st.text(max_size=8))] = draw(json_value)
    return msg


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\r", " ")


def _dump(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def hostile_line(draw: st.DrawFn, *, allow_initialize: bool = True) -> str:
    """One line of input: valid, malformed or hostile JSON-RPC."""
    kind = draw(st.sampled_from(["envelope"] * 10 + ["junk", "non-object", "deep", "batch", "truncated", "unicode"]))
    ascii_only = draw(st.booleans())
    if kind == "envelope":
        msg = draw(envelope())
        if not allow_initialize and msg.get("method") == "initialize":
            msg["method"] = "ping"
        if draw(st.integers(0, 19)) == 0:  # deeply nested params, within and beyond the parser's limit
            depth = draw(st.integers(min_value=1, max_value=3000))
            text = _dump({k: v for k, v in msg.items() if k != "params"}, ascii_only)
            return text[:-1] + (", " if len(text) > 2 else "") + f'"params": {{"deep": {_nested(depth)}}}}}'
        return _dump(msg, ascii_only)
    if kind == "junk":
        return _one_line(draw(st.text(max_size=200)))
    if kind == "non-object":
        return _dump(draw(st.one_of(json_leaf, st.lists(json_value, max_size=4))), ascii_only)
    if kind == "deep":
        return _nested(draw(st.integers(min_value=1, max_value=100_000)))
    if kind == "batch":
        return _dump(draw(st.lists(envelope(), min_size=1, max_size=3)), ascii_only)
    if kind == "truncated":
        text = _dump(draw(envelope()), ascii_only)
        return text[: draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))]
    # Unicode junk: lone surrogates (invalid UTF-8 on the wire), controls, private use, BOMs.
    junk = draw(st.text(st.characters(codec=None, blacklist_characters="\n\r"), min_size=1, max_size=50))
    return "\ufeff" + junk if draw(st.booleans()) else junk


_Frame = TypeVar("_Frame", str, bytes)


def encode(line: str) -> bytes:
    return _one_line(line).encode("utf-8", "surrogatepass") + b"\n"


def variants(frame: _Frame) -> list[_Frame]:
    """Each drawn message four times over: as drawn, cut in half and cut at a third (malformed),
    and again (a duplicate id while the first may still be in flight). Cheap variants keep
    10,000 messages fast to make."""
    return [frame, frame[: len(frame) // 2], frame, frame[: len(frame) // 3]]


def amplify(lines: list[str]) -> list[bytes]:
    return [encode(variant) for line in lines for variant in variants(line)]


def required_answer(data: bytes) -> Any | None:
    """The id a line's request must be answered under, or None when it is not a request."""
    text = data.decode("utf-8", "replace")
    try:
        message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except Exception:
        return None
    if isinstance(message, types.JSONRPCRequest):
        return message.id
    return None


def needs_stdio_error_answer(data: bytes) -> bool:
    """Whether a stdio line must get an error answer: anything but a blank line or a message."""
    text = data.decode("utf-8", "replace")
    return bool(text.strip(" \t\r\n")) and needs_error_answer(text)


def id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --- the stdio peer ------------------------------------------------------------------------------


class ProtocolViolation(AssertionError):
    pass


class StdioPeer:
    """A real server process on pipes; a reader thread checks every line of its stdout."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self._stderr_path = tmp / "server.stderr"
        self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=settings_env(root, tmp, tool_poll_interval_s=3600),
            cwd=root,
        )
        self.answers: Counter[str] = Counter()
        self.total = 0
        """Every answer, those under id null included."""
        self.violations: list[str] = []
        self.sent = 0
        self.eof = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="fuzz-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                message = types.jsonrpc_message_adapter.validate_json(raw, by_name=False)
            except Exception as exc:
                with self._cond:
                    self.violations.append(f"not protocol on stdout: {raw[:200]!r} ({exc})")
                    self._cond.notify_all()
                continue
            if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                with self._cond:
                    self.answers[id_key(message.id)] += 1
                    self.total += 1
                    self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def send(self, lines: list[bytes]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(lines))
        self.proc.stdin.flush()
        self.sent += len(lines)

    def exchange(self, lines: list[bytes]) -> None:
        """Send a batch; wait until every request in it was answered (more answers than before), and
        every other line that is not a message got an error (under its id, or null)."""
        ids = [required_answer(line) for line in lines]
        needed = Counter(id_key(i) for i in ids if i is not None)
        expected = sum(1 for i, line in zip(ids, lines, strict=True) if i is not None or needs_stdio_error_answer(line))
        with self._cond:
            baseline = {key: self.answers[key] for key in needed}
            baseline_total = self.total
        self.send(lines)

        def done() -> bool:
            if self.violations or self.eof:
                return True
            return self.total >= baseline_total + expected and all(self.answers[k] > baseline[k] for k in needed)

        with self._cond:
            finished = self._cond.wait_for(done, timeout=ANSWER_TIMEOUT_S)
            missing = [k for k in needed if self.answers[k] <= baseline[k]]
            received = self.total - baseline_total
        if self.violations:
            raise ProtocolViolation(self.violations[0])
        if not finished or missing:
            state = "closed its stdout" if self.eof else f"did not answer within {ANSWER_TIMEOUT_S} s"
            raise AssertionError(
                f"the server {state}: {received}/{expected} answers; unanswered ids: {[k[:80] for k in missing[:5]]}"
            )

    def stderr_text(self) -> str:
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> int:
        """EOF on stdin: the server must exit cleanly."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise
        finally:
            self._reader.join(timeout=30)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._stderr.close()
        return code


@contextmanager
def stdio_peer(root: Path, tmp: Path) -> Iterator[StdioPeer]:
    peer = StdioPeer(root, tmp)
    try:
        yield peer
    finally:
        if peer.proc.returncode is None:
            peer.proc.kill()
            peer.proc.wait(timeout=30)
            peer.close()


def request(id_: Any, method_name: str, params_: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method_name}
    if params_ is not None:
        msg["params"] = params_
    return encode(json.dumps(msg))


INITIALIZE = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}
# No shrinking: every batch runs against the same long-lived server, so a failure depends on the
# history before it and shrinking would replay it against a changed server (slowly). The failing
# batch is reported as drawn.
FUZZ_SETTINGS = settings(
    max_examples=BATCHES,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def test_stdio_survives_hostile_messages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with stdio_peer(root, tmp_path) as peer:

        @settings(FUZZ_SETTINGS, max_examples=1)
        @given(st.lists(hostile_line(allow_initialize=False), min_size=DRAWN, max_size=DRAWN))
        def before_initialize(lines: list[str]) -> None:
            peer.exchange(amplify(lines))

        @FUZZ_SETTINGS
        @given(st.lists(hostile_line(), min_size=DRAWN, max_size=DRAWN))
        def after_initialize(lines: list[str]) -> None:
            peer.exchange(amplify(lines))

        before_initialize()
        peer.exchange([request("fuzz-init", "initialize", INITIALIZE)])
        peer.send([encode(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))])
        after_initialize()
        assert peer.sent >= 10_000

        # A normal session still works.
        peer.exchange([request("fuzz-final-init", "initialize", INITIALIZE)])
        before = {k: peer.answers[k] for k in (id_key("fuzz-list"), id_key("fuzz-call"))}
        peer.exchange(
            [
                request("fuzz-list", "tools/list"),
                request("fuzz-call", "tools/call", {"name": "get_run", "arguments": {"run_id": "run_nope"}}),
            ]
        )
        assert all(peer.answers[k] == before[k] + 1 for k in before)
        assert peer.close() == 0
        stderr = peer.stderr_text()
    assert "Traceback" not in stderr, stderr[-3000:]


# --- the WebSocket peer --------------------------------------------------------------------------
#
# Like stdio, WebSocket answers what the SDK's readers drop (`transports/framing.py`):
# every text frame that is not a valid notification or response gets an answer, a parse error or
# an invalid request under the request's id when one can be read, else under `null`. Frames that
# the protocol itself must refuse end the connection with a close code instead (and the fuzz
# reconnects): a frame over `max_message_bytes` (1009) and a text frame that is not UTF-8 (1007).

WS_MAX_MESSAGE_BYTES = 64 * 1024
CLEAN_CLOSES = {"too-big": CloseCode.MESSAGE_TOO_BIG, "not-utf8": CloseCode.INVALID_DATA}


def frame_kind(frame: str | bytes) -> str:
    """`binary`, `text`, or the kind of a frame that must close the connection."""
    if isinstance(frame, bytes):
        return "too-big" if len(frame) > WS_MAX_MESSAGE_BYTES else "binary"
    try:
        size = len(frame.encode("utf-8"))
    except UnicodeEncodeError:
        return "not-utf8"
    return "too-big" if size > WS_MAX_MESSAGE_BYTES else "text"


def needs_error_answer(frame: str | bytes) -> bool:
    """Whether the server must answer this (non-closing) frame with an error of its own."""
    if isinstance(frame, bytes):
        return True
    try:
        types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
    except Exception:
        return True
    return False


class WebSocketPeer:
    """`python -m mcp_server --transport websocket --port 0` and a sync client that checks every frame."""

    def __init__(self, root: Path, tmp: Path) -> None:
        env = settings_env(
            root,
            tmp,
            max_message_bytes=WS_MAX_MESSAGE_BYTES,
            rate_limit_rps=1_000_000,
            rate_limit_burst=1_000_000,
            tool_poll_interval_s=3600,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server", "--transport", "websocket", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=root,
        )
        self.stderr_lines: list[str] = []
        self.stdout_data = b""
        self._listening = threading.Event()
        self.url = ""
        self._threads = [
            threading.Thread(target=self._read_stderr, name="fuzz-ws-stderr", daemon=True),
            threading.Thread(target=self._read_stdout, name="fuzz-ws-stdout", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._listening.wait(timeout=30) or not self.url:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.close_pipes()
            raise AssertionError(f"the WebSocket server did not start: {''.join(self.stderr_lines)[-2000:]}")
        self.ws: ClientConnection | None = None
        self._ws_stack = ExitStack()
        self.sent = 0
        self.reconnects = 0

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.stderr_lines.append(line)
            if "listening on ws://" in line and not self._listening.is_set():
                self.url = line.split("listening on ", 1)[1].strip()
                self._listening.set()
        self._listening.set()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        self.stdout_data = self.proc.stdout.read()

    def connection(self) -> ClientConnection:
        if self.ws is None:
            self._ws_stack = ExitStack()
            self.ws = self._ws_stack.enter_context(
                ws_connect(self.url, subprotocols=[Subprotocol("mcp")], max_size=None, open_timeout=10)
            )
        return self.ws

    def disconnect(self) -> None:
        self.ws = None
        self._ws_stack.close()

    def _receive(self, deadline: float) -> types.JSONRPCMessage:
        ws = self.connection()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        frame = ws.recv(timeout=remaining)
        try:
            return types.jsonrpc_message_adapter.validate_json(frame, by_name=False)
        except Exception as exc:
            raise ProtocolViolation(f"not a JSON-RPC message from the server: {frame[:200]!r} ({exc})") from None

    def _exchange_open(self, frames: list[str | bytes]) -> None:
        """Frames that keep the connection open: every request is answered under its id, and every
        other frame that is not a notification or a response gets an error (under its id or null)."""
        ws = self.connection()
        ids: set[str] = set()
        expected = 0
        for frame in frames:
            ws.send(frame)
            self.sent += 1
            request_id = required_answer(frame.encode("utf-8")) if isinstance(frame, str) else None
            if request_id is not None:
                ids.add(id_key(request_id))
                expected += 1
            elif needs_error_answer(frame):
                expected += 1
        answered: set[str] = set()
        received = 0
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        try:
            while not ids <= answered or received < expected:
                message = self._receive(deadline)
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    answered.add(id_key(message.id))
                    received += 1
        except TimeoutError:
            missing = sorted(ids - answered)[:5]
            raise AssertionError(
                f"no answer within {ANSWER_TIMEOUT_S} s: {received}/{expected} answers, ids missing: {missing}"
            ) from None

    def _exchange_closing(self, frame: str | bytes, kind: str) -> None:
        """A frame the protocol refuses: the server closes the connection cleanly, with the right code."""
        ws = self.connection()
        data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
        try:
            ws.send(data, text=isinstance(frame, str))
            self.sent += 1
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while True:
                self._receive(deadline)  # answers still in flight may come first
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server dropped the connection without a close frame"
            assert closed.rcvd.code == CLEAN_CLOSES[kind], f"{kind}: closed with {closed.rcvd}"
        except TimeoutError:
            raise AssertionError(f"{kind}: the server did not close the connection") from None
        finally:
            self.disconnect()
            self.reconnects += 1

    def exchange(self, frames: list[str | bytes]) -> None:
        pending: list[str | bytes] = []
        for frame in frames:
            kind = frame_kind(frame)
            if kind in CLEAN_CLOSES:
                self._exchange_open(pending)
                pending = []
                self._exchange_closing(frame, kind)
            else:
                pending.append(frame)
        self._exchange_open(pending)

    def call(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Send well-formed requests; return the answers by id."""
        ws = self.connection()
        for message in messages:
            ws.send(json.dumps(message))
        wanted = {id_key(m["id"]) for m in messages if "id" in m}
        answers: dict[str, Any] = {}
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not wanted <= set(answers):
            message = self._receive(deadline)
            if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                answers[id_key(message.id)] = message
        return answers

    def stop(self) -> int:
        """SIGTERM: the server must shut down cleanly."""
        self.disconnect()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.close_pipes()

    def close_pipes(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def websocket_peer(root: Path, tmp: Path) -> Iterator[WebSocketPeer]:
    peer: WebSocketPeer | None = None
    try:
        peer = WebSocketPeer(root, tmp)
        yield peer
    finally:
        if peer is not None and peer.proc.returncode is None:
            peer.proc.kill()
            peer.proc.wait(timeout=30)
            peer.close_pipes()


hostile_frame = st.one_of(
    hostile_line(),
    hostile_line(),
    hostile_line(),
    st.binary(max_size=200),  # binary frames are not part of the protocol
)


def test_websocket_survives_hostile_messages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with websocket_peer(root, tmp_path) as peer:

        @settings(FUZZ_SETTINGS, max_examples=1)
        @given(st.lists(hostile_line(allow_initialize=False), min_size=DRAWN, max_size=DRAWN))
        def before_initialize(lines: list[str]) -> None:
            peer.exchange([variant for line in lines for variant in variants(line)])

        @FUZZ_SETTINGS
        @given(st.lists(hostile_frame, min_size=DRAWN, max_size=DRAWN))
        def after_initialize(frames: list[str | bytes]) -> None:
            peer.exchange([variant for frame in frames for variant in variants(frame)])

        before_initialize()
        init = {"jsonrpc": "2.0", "id": "ws-init", "method": "initialize", "params": INITIALIZE}
        peer.call([init, {"jsonrpc": "2.0", "method": "notifications/initialized"}])
        after_initialize()
        assert peer.sent >= 10_000

        # A normal session on a fresh connection still works.
        peer.disconnect()
        peer.call([init, {"jsonrpc": "2.0", "method": "notifications/initialized"}])
        call = {
            "jsonrpc": "2.0",
            "id": "ws-call",
            "method": "tools/call",
            "params": {"name": "get_run", "arguments": {"run_id": "run_nope"}},
        }
        answers = peer.call([call, {"jsonrpc": "2.0", "id": "ws-list", "method": "tools/list"}])
        result = answers[id_key("ws-call")]
        assert isinstance(result, types.JSONRPCResponse)
        assert result.result["isError"] is True and "not found" in result.result["content"][0]["text"]
        assert isinstance(answers[id_key("ws-list")], types.JSONRPCResponse)
        assert peer.stop() == 0
    stderr = "".join(peer.stderr_lines)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert peer.stdout_data == b""


# --- the HTTP peer -------------------------------------------------------------------------------
#
# Every POST gets an HTTP answer (never a dropped connection, never a 5xx), whatever its body and
# headers: in a session, without one, with a made-up session id or protocol version, with an odd
# method or content type. Then a normal session still works and SIGTERM ends the server cleanly.

HTTP_MAX_MESSAGE_BYTES = 64 * 1024
HTTP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

hostile_headers = st.fixed_dictionaries(
    {},
    optional={
        "Mcp-Session-Id": st.one_of(st.just("<session>"), st.text(st.characters(min_codepoint=33, max_codepoint=126))),
        "MCP-Protocol-Version": st.one_of(
            st.sampled_from(["2025-06-18", "2025-11-25", "2026-07-28"]),
            st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20),
        ),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8", ""]),
        "Accept": st.sampled_from(["application/json", "text/event-stream", "*/*", ""]),
    },
)


class HttpPeer:
    """`python -m mcp_server --transport http --port 0` and a sync client that checks every answer."""

    def __init__(self, root: Path, tmp: Path) -> None:
        env = settings_env(
            root,
            tmp,
            max_message_bytes=HTTP_MAX_MESSAGE_BYTES,
            rate_limit_rps=1_000_000,
            rate_limit_burst=1_000_000,
            tool_poll_interval_s=3600,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_server", "--transport", "http", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=root,
        )
        assert self.proc.stderr is not None
        self.stderr_lines: list[str] = []
        line = self.proc.stderr.readline().decode("utf-8", "replace")
        self.stderr_lines.append(line)
        if "listening on http://" not in line:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"the HTTP server did not start: {line}")
        self.url = line.split("listening on ", 1)[1].strip()
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="fuzz-http-stderr", daemon=True)
        self._stderr_thread.start()
        import httpx2

        self.http = httpx2.Client(timeout=ANSWER_TIMEOUT_S)
        self.session = ""
        self.sent = 0
        self.statuses: Counter[int] = Counter()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode("utf-8", "replace"))

    def open_session(self) -> None:
        init = {"jsonrpc": "2.0", "id": "http-init", "method": "initialize", "params": INITIALIZE}
        opened = self.http.post(self.url, content=json.dumps(init), headers=HTTP_HEADERS)
        assert opened.status_code == 200, opened.text
        self.session = opened.headers["mcp-session-id"]
        notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        headers = {**HTTP_HEADERS, "Mcp-Session-Id": self.session}
        assert self.http.post(self.url, content=json.dumps(notified), headers=headers).status_code == 202

    def post(self, body: str, headers: dict[str, str], method: str = "POST") -> int:
        merged = {**HTTP_HEADERS, **{k: v.replace("<session>", self.session) for k, v in headers.items()}}
        data = body.encode("utf-8", "surrogatepass")
        # Streamed, the body left unread: a GET (or a subscriptions/listen) may open a stream that
        # never ends, and closing it is the client's way to leave.
        with self.http.stream(method, self.url, content=data, headers=merged) as response:
            status = response.status_code
            detail = response.read()[:300] if status >= 500 else b""
        self.sent += 1
        self.statuses[status] += 1
        assert status < 500, f"{method} {body[:100]!r} {headers}: {status} {detail!r}"
        return status

    def stop(self) -> int:
        self.http.close()
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._stderr_thread.join(timeout=30)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()


@contextmanager
def http_peer(root: Path, tmp: Path) -> Iterator[HttpPeer]:
    peer: HttpPeer | None = None
    try:
        peer = HttpPeer(root, tmp)
        yield peer
    finally:
        if peer is not None and peer.proc.returncode is None:
            peer.proc.kill()
            peer.proc.wait(timeout=30)


def test_http_survives_hostile_requests(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with http_peer(root, tmp_path) as peer:
        peer.open_session()

        @settings(FUZZ_SETTINGS, max_examples=30)
        @given(
            st.lists(
                st.tuples(hostile_line(), hostile_headers, st.sampled_from(["POST"] * 8 + ["GET", "DELETE", "PUT"])),
                min_size=DRAWN,
                max_size=DRAWN,
            )
        )
        def hostile(requests: list[tuple[str, dict[str, str], str]]) -> None:
            for body, headers, method in requests:
                status = peer.post(body, headers, method)
                if method == "DELETE" and status < 300 and headers.get("Mcp-Session-Id") == "<session>":
                    peer.open_session()  # the fuzz ended our own session: open another

        hostile()
        assert peer.sent >= 30 * DRAWN
        # A normal session still works.
        peer.open_session()
        call = {
            "jsonrpc": "2.0",
            "id": "http-call",
            "method": "tools/call",
            "params": {"name": "get_run", "arguments": {"run_id": "run_nope"}},
        }
        headers = {**HTTP_HEADERS, "Mcp-Session-Id": peer.session}
        answered = peer.http.post(peer.url, content=json.dumps(call), headers=headers)
        assert answered.status_code == 200 and "not found" in answered.text
        assert peer.stop() == 0
    stderr = "".join(peer.stderr_lines)
    assert "Traceback" not in stderr, stderr[-3000:]
