"""Redaction of secrets: the shapes it knows, and streaming that is exact across any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.redact import REDACTED, Redactor, StreamRedactor, secret_values

ENV_SECRET = "s3cr3t-Value_from.env"
GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXY"
AKIA = "AKIAIOSFODNN7EXAMPLE"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_value"
PASSWORD = "hunter2-is-my-pass"
KEY_BODY = "MIIEowIBAAKCAQEA0123456789abcdef\nQWERTYUIOPASDFGHJKLZXCVBNM0123456789\n"
KEY_BLOCK = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}-----END RSA PRIVATE KEY-----"

# (text containing a secret, the secret, what the redacted text must contain)
SAMPLES = [
    pytest.param(f"connecting with {ENV_SECRET} now", ENV_SECRET, f"connecting with {REDACTED} now", id="env-value"),
    pytest.param(f"token {GHP} leaked", GHP, f"token {REDACTED} leaked", id="github-ghp"),
    pytest.param(f"GH_TOKEN {PAT}.", PAT, f"GH_TOKEN {REDACTED}.", id="github-pat"),
    pytest.param(f"aws {AKIA} key", AKIA, f"aws {REDACTED} key", id="aws-akia"),
    pytest.param(
        f"Authorization: Bearer {BEARER_TOKEN}\n", BEARER_TOKEN, f"Authorization: Bearer {REDACTED}\n", id="bearer"
    ),
    pytest.param(f"db password={PASSWORD} host=x", PASSWORD, f"db password={REDACTED} host=x", id="password="),
    pytest.param(f"PASSWORD: {PASSWORD}\n", PASSWORD, f"PASSWORD:{REDACTED}\n", id="password-colon"),
    pytest.param(f"key:\n{KEY_BLOCK}\ndone", KEY_BODY.splitlines()[1], f"key:\n{REDACTED}\ndone", id="private-key"),
    pytest.param(
        f"key:\n-----BEGIN PRIVATE KEY-----\n{KEY_BODY}", KEY_BODY.splitlines()[0], f"key:\n{REDACTED}", id="cut-key"
    ),
]


def redactor() -> Redactor:
    return Redactor([ENV_SECRET])


def stream_all(stream: StreamRedactor, chunks: list[str]) -> str:
    return "".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


def test_secret_values_are_taken_from_secret_looking_variables() -> None:
    environ = {
        "GITHUB_TOKEN": "tok-123456",
        "MY_API_KEY": "k" * 10,
        "DB_PASSWORD": "short",  # too short to redact without redacting half the output
        "AWS_SECRET_ACCESS_KEY": "abc/def+ghi",
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": "/home/someone",
    }
    values = secret_values(environ)
    assert set(values) == {"tok-123456", "k" * 10, "abc/def+ghi"}
    assert values == sorted(values, key=len, reverse=True)  # longest first: no partial redaction


@pytest.mark.parametrize(("text", "secret", "expected"), SAMPLES)
def test_each_shape_is_redacted(text: str, secret: str, expected: str) -> None:
    redacted = redactor().redact(text)
    assert secret not in redacted
    assert redacted == expected


def test_text_without_secrets_is_unchanged() -> None:
    text = "collected 12 items\ntests/test_a.py ....F\npassword policy documented in README\n"
    assert redactor().redact(text) == text
    assert stream_all(redactor().stream(), [text]) == text


@pytest.mark.parametrize(("text", "secret", "expected"), SAMPLES)
def test_a_secret_split_across_two_chunks_at_every_point_is_redacted(text: str, secret: str, expected: str) -> None:
    red = redactor()
    # Enough output around the secret that the stream really cuts and releases text before the end.
    before = "".join(f"line {i} of the test output\n" for i in range(200))
    after = "".join(f"more output {i}\n" for i in range(10))
    whole = before + text + after
    expected_whole = red.redact(whole)
    assert secret not in expected_whole
    start = whole.index(secret)
    points = set(range(start - 2, start + len(secret) + 3))  # the chunk boundary inside the secret
    for window in (4160, 2 * 4160):  # where the hold-back boundary crosses the secret
        points |= {p + window for p in range(start - 2, start + len(secret) + 3)}
    for point in sorted(p for p in points if 0 <= p <= len(whole)):
        out = stream_all(red.stream(), [whole[:point], whole[point:]])
        assert secret not in out, f"split at {point}"
        assert out == expected_whole, f"split at {point}"


def test_output_streams_before_the_process_ends() -> None:
    stream = redactor().stream()
    released = ""
    for i in range(2000):
        released += stream.feed(f"line {i}: token {GHP}\n")
    assert len(released) > 10_000  # text is released as it comes, not held to the end
    assert GHP not in released
    rest = stream.flush()
    assert GHP not in rest and (released + rest).count(REDACTED) == 2000


def test_an_unclosed_key_block_is_held_then_redacted_to_the_end() -> None:
    stream = redactor().stream()
    out = stream.feed("start\n-----BEGIN OPENSSH PRIVATE KEY-----\n")
    for _ in range(200):
        out += stream.feed("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABFwAAAAdzc2gtcn\n")
    assert "b3BlbnNz" not in out
    out += stream.flush()
    assert out == f"start\n{REDACTED}"


def test_memory_is_bounded_when_a_key_block_never_closes() -> None:
    stream = redactor().stream()
    stream.feed("-----BEGIN PRIVATE KEY-----\n")
    for _ in range(3000):  # 210 KB: far more than any key
        stream.feed("x" * 69 + "\n")
    assert stream.pending < 100_000


# --- any chunking gives the same as redacting the whole text ------------------------------------

PIECES = [
    ENV_SECRET,
    GHP,
    PAT,
    AKIA,
    f"Bearer {BEARER_TOKEN}",
    f"password={PASSWORD}",
    "password =",
    "token: ",
    KEY_BLOCK,
    "-----BEGIN EC PRIVATE KEY-----\n",
    "-----END EC PRIVATE KEY-----",
    "ghp_",
    "github_pat_",
    "AKIA",
    "Bearer ",
    "\n",
    " ",
    "x" * 1500,
    ("filler line\n" * 150),
    "y" * 5000,
]
texts = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=40), st.text(alphabet="ghp_AKIAbeare =\n-", max_size=20)),
    max_size=40,
).map("".join)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunked())
def test_streaming_any_chunking_equals_redacting_the_whole(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    red = redactor()
    assert stream_all(red.stream(), chunks) == red.redact(text)
