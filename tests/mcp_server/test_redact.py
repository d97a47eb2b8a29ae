"""Redaction of secrets: the shapes it knows, and streaming that is exact across any chunking."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.redact import REDACTED, Redactor, StreamRedactor, _replacement, secret_values

ENV_SECRET = "s3cr3t-Value_from.env"
GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXY"
AKIA = "AKIAIOSFODNN7EXAMPLE"
BEARER_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_value"
PASSWORD = "hunter2-is-my-pass"
KEY_BODY = "MIIEowIBAAKCAQEA0123456789abcdef\nQWERTYUIOPASDFGHJKLZXCVBNM0123456789\n"
KEY_BLOCK = f"-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}-----END RSA PRIVATE KEY-----"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "Sfl" * 300

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
    pytest.param(f"PASSWORD: {PASSWORD}\n", PASSWORD, f"PASSWORD: {REDACTED}\n", id="password-colon"),
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
    # The forms of issue 10: quoted, JSON and repr dicts, NAME=value, JWTs, long values.
    "password = 'hunter2quoted'",
    '{"password": "hunter2json", "api_key": "k-123"}',
    "{'password': 'x'}",
    "AWS_SECRET_ACCESS_KEY=",
    "SECRET_KEY = '",
    "'",
    '"',
    "\\",
    '\\"',
    "token=",
    "token=" + "v" * 5000 + "9",
    'password="' + "q" * 6000,
    JWT,
    "eyJ",
    "-----BEGIN RSA PRIVATE KEY-----\n" + "k" * 9000,
    "token=token)",
    # Bare words after a lower-case name (round 2): `=` with no space, `:` to the line's end.
    "password=correcthorse",
    "passwd: hunter\n",
    "secret=abcdefgh ",
    "password=password",
    "f(token=token)",
    "token=self.token",
    "api_key=api_key_from_env()",
    "token: str\n",
    "id-token: write\n",
    "tokens: ParseResults\n",
    "&",
]
texts = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(max_size=40),
        st.text(alphabet="ghp_AKIAbeare =\n-", max_size=20),
        st.text(alphabet="passwordtokenSECRET_=:'\"\\ 9x{}\n", max_size=30),
        st.text(alphabet="passwdsecrtokenhuAB=: &;\r\n", max_size=30),
    ),
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
    whole = red.redact(text)
    assert whole == red.pattern.sub(_replacement, text)  # the fast path finds exactly the matches
    assert stream_all(red.stream(), chunks) == whole


# --- the forms that leaked (issue 10) ------------------------------------------------------------

LEAKED_FORMS = [
    pytest.param("password = 'hunter2quoted'", "hunter2quoted", id="quoted-single"),
    pytest.param('password = "hunter2dq"', "hunter2dq", id="quoted-double"),
    pytest.param('{"password": "hunter2json", "api_key": "apikeyvalue"}', "hunter2json", id="json-dict"),
    pytest.param('{"password": "hunter2json", "api_key": "apikeyvalue"}', "apikeyvalue", id="json-dict-api-key"),
    pytest.param("{'password': 'x'}", "'x'", id="repr-dict"),
    pytest.param("AssertionError: assert {'token': 'tok9value', 'password': 'p'} == {}", "tok9value", id="assert"),
    pytest.param("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCY", "wJalrXUtnFEMI", id="env-assignment"),
    pytest.param("SECRET_KEY = 'django-insecure-abc'", "django-insecure", id="secret-key-quoted"),
    pytest.param("MY_SERVICE_TOKEN=abcdefghij", "abcdefghij", id="upper-token-letters-only"),
    pytest.param('DB_PASSWORD = "correct horse"', "correct horse", id="spaced-quoted"),
    pytest.param(f"header {JWT} end", JWT[:40], id="jwt"),
    pytest.param(f"token={JWT}", JWT[-40:], id="long-jwt-after-token"),
    pytest.param("token=" + "t0k" * 400, "t0k" * 200, id="value-over-512"),
    pytest.param(r"raise AssertionError(\"password=hunter2hunter2\")", "hunter2hunter2", id="escaped-json"),
]


@pytest.mark.parametrize(("text", "secret"), LEAKED_FORMS)
def test_forms_that_leaked_are_redacted_whole_and_streamed(text: str, secret: str) -> None:
    red = redactor()
    assert secret not in red.redact(text)
    before = "".join(f"line {i} of the output\n" for i in range(300))
    whole = before + text + "\n" + "after\n" * 20
    for size in (1, 7, 4096, 5000):
        chunks = [whole[i : i + size] for i in range(0, len(whole), size)]
        assert secret not in stream_all(red.stream(), chunks)


def test_redaction_keeps_json_escapes_intact() -> None:
    """The `password=` shape used to eat the backslash of `\\"` inside ruff's JSON."""
    import json

    text = json.dumps({"fix": 'raise AssertionError("password=hunter2hunter2")'})
    out = redactor().redact(text)
    assert "hunter2hunter2" not in out
    assert json.loads(out)["fix"] == 'raise AssertionError("password=[REDACTED]")'


def test_code_and_prose_are_left_alone() -> None:
    text = (
        "token = secrets.token_hex(16)\n"
        "client = Client(token=token)\n"
        "def check(password: str, token: Any) -> None:\n"
        "    tokens == 5\n"
        "the token budget is spent; password policy: see the README\n"
        "Authorization header carries a token\n"
        '    "token: ",\n'
    )
    assert redactor().redact(text) == text


BARE_WORDS = [
    pytest.param("password=correcthorse", "correcthorse", id="password=word"),
    pytest.param("login failed for bob passwd: hunter\n", "hunter", id="passwd-colon-word"),
    pytest.param("secret=abcdefgh", "abcdefgh", id="secret=word"),
    pytest.param("GET /login?user=bob&password=hunter&next=x", "hunter", id="query-string"),
    pytest.param("db: password=CorrectHorse host=x", "CorrectHorse", id="mixed-case"),
    pytest.param("api_key: sesame\r\n", "sesame", id="api-key-colon-crlf"),
    pytest.param('print("password=correcthorse")', "correcthorse", id="in-a-string"),
]


@pytest.mark.parametrize(("text", "secret"), BARE_WORDS)
def test_a_bare_word_after_a_secret_name_is_redacted_whole_and_streamed(text: str, secret: str) -> None:
    red = redactor()
    out = red.redact(text)
    assert secret not in out and REDACTED in out
    before = "".join(f"line {i} of the output\n" for i in range(300))
    whole = before + text + "\n" + "after\n" * 20
    for size in (1, 7, 4096, 5000):
        chunks = [whole[i : i + size] for i in range(0, len(whole), size)]
        assert secret not in stream_all(red.stream(), chunks)


@pytest.mark.parametrize(
    "text",
    [
        "f(token=token)",
        "password=password",
        "token=self.token",
        "api_key=api_key_from_env()",
        "the token is valid",
        "connect(password=passphrase, secret=value)",
        "password=None\n",
        "password: str\n",
        "    token: Token\n",
        "tokens: ParseResults\n",
        "api_key: Optional[str] = None\n",
        "Args:\n    token: the token to use.\n",
        "permissions:\n  id-token: write\n",
        "    secrets: inherit\n",
        "token_type=bearer\n",
        "password = hunter\n",  # an assignment of a variable (code), not `=` with no space
    ],
)
def test_code_and_prose_around_a_bare_word_are_left_alone(text: str) -> None:
    assert redactor().redact(text) == text


def test_a_key_without_end_is_redacted_however_much_follows() -> None:
    body = "".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{i:08d}\n" for i in range(3000))  # ~120 KB
    text = "before\n-----BEGIN PRIVATE KEY-----\n" + body + "trailing output\n"
    assert redactor().redact(text) == f"before\n{REDACTED}"
    stream = redactor().stream()
    out = "".join(stream.feed(text[i : i + 1000]) for i in range(0, len(text), 1000))
    assert stream.pending < 10_000  # swallowed as it comes, not held
    out += stream.flush()
    assert out == f"before\n{REDACTED}"


def test_a_key_that_ends_later_lets_the_rest_through() -> None:
    text = "-----BEGIN PRIVATE KEY-----\n" + "a" * 70_000 + "\n-----END PRIVATE KEY-----\nvisible 42\n"
    red = redactor()
    assert red.redact(text) == f"{REDACTED}\nvisible 42\n"
    for size in (1000, 4161, 33):
        assert stream_all(red.stream(), [text[i : i + size] for i in range(0, len(text), size)]) == red.redact(text)


def test_redact_value_keeps_shape_and_types() -> None:
    value = {
        "n": 3,
        "ok": True,
        "none": None,
        "f": 1.5,
        "items": [{"nodeid": f"t.py::test[{GHP}]", "k": [1, "password='x1'"]}],
        f"key {AKIA}": "v",
    }
    out = redactor().redact_value(value)
    assert out["n"] == 3 and out["ok"] is True and out["none"] is None and out["f"] == 1.5
    assert out["items"][0]["nodeid"] == f"t.py::test[{REDACTED}]"
    assert out["items"][0]["k"] == [1, f"password='{REDACTED}'"]
    assert f"key {REDACTED}" in out
    assert GHP not in repr(out) and AKIA not in repr(out)


def test_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    import io
    import logging

    from mcp_server.redact import RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redactor()))
    log = logging.getLogger("test_redact.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting with %s", ENV_SECRET)
        try:
            raise ValueError(f"bad token {GHP}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert ENV_SECRET not in text and GHP not in text
    assert text.count(REDACTED) == 2


def test_few_redactions_on_this_repository() -> None:
    """False positives: our own source and tests hold code about tokens and passwords, and some
    deliberate secret-shaped test data; outside the test data nothing is redacted."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    red = Redactor([])
    hits: dict[str, int] = {}
    for path in sorted([*repo.glob("mcp_server/**/*.py"), *repo.glob("tools/**/*.py"), *repo.glob("benchmarks/*.py")]):
        text = path.read_text(encoding="utf-8")
        count = len(red.pattern.findall(text))
        if count:
            hits[str(path.relative_to(repo))] = count
    assert hits == {}, hits


def test_the_servers_stderr_log_is_redacted() -> None:
    """Logging as the CLI configures it: every record passes the redacting filter."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from mcp_server.cli import _setup_logging\n"
        "_setup_logging('info')\n"
        f"logging.getLogger('mcp_server.x').warning('ruff failed for %s', 'password=\"{PASSWORD}\" {GHP}')\n"
        "try:\n"
        f"    raise RuntimeError('{AKIA}')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('mcp_server.y').exception('boom')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ruff failed for" in proc.stderr and "RuntimeError" in proc.stderr
    for secret in (PASSWORD, GHP, AKIA):
        assert secret not in proc.stderr


def test_redactions_are_counted_once() -> None:
    red = redactor()
    once = red.redact(f"a {GHP} b password='hunter2' c")
    assert red.redactions == 2
    assert red.redact(once) == once and red.redactions == 2  # redacting again hides nothing new
    stream_all(red.stream(), [f"x {AKIA}", " y\n"])
    assert red.redactions == 3


def test_a_lone_backslash_after_a_long_quoted_value_survives_streaming() -> None:
    """Found by the property test: the stream swallowed a trailing backslash the whole text keeps."""
    red = redactor()
    text = "y" * 5000 + 'password="' + "q" * 6000 + "\\"
    for point in (len(text) - 1, len(text) - 2, 9000):
        assert stream_all(red.stream(), [text[:point], text[point:]]) == red.redact(text)


def test_a_diff_holding_a_private_key_withholds_those_hunks_and_keeps_the_rest() -> None:
    from mcp_server.redact import WITHHELD

    diff = (
        "--- a/keys.py\n+++ b/keys.py\n"
        "@@ -1,3 +1,3 @@\n-X  =  1\n+X = 1\n password = 'hunter2quoted'\n"
        "@@ -10,6 +10,6 @@\n-KEY  =  '''-----BEGIN RSA PRIVATE KEY-----\n+KEY = '''-----BEGIN RSA PRIVATE KEY-----\n"
        " MIIEowIBAAKCAQEA0123456789abcdef\n"
        "@@ -20,3 +20,3 @@\n-QWERTYUIOPASDFGHJKLZXCVBNM0123456789\n+QWERTYUIOPASDFGHJKLZXCVBNM0123456789 \n"
        " -----END RSA PRIVATE KEY-----'''\n"
        "@@ -40,2 +40,2 @@\n-Y  =  2\n+Y = 2\n"
    )
    out = redactor().redact_string(diff)
    assert "MIIEowIBAAK" not in out and "QWERTYUIOP" not in out and "hunter2quoted" not in out
    assert out.count(WITHHELD) == 2  # the hunks from BEGIN to END
    assert "-X  =  1\n+X = 1\n password = '[REDACTED]'\n" in out  # other hunks: line by line
    assert out.endswith("@@ -40,2 +40,2 @@\n-Y  =  2\n+Y = 2\n")
    plain = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-KEY  =  'AKIAIOSFODNN7EXAMPLE'\n+KEY = 'AKIAIOSFODNN7EXAMPLE'\n"
    assert redactor().redact_string(plain) == redactor().redact(plain)


def test_a_multi_file_diff_keeps_the_next_files_header() -> None:
    from mcp_server.redact import WITHHELD

    one = "--- a/k.py\n+++ b/k.py\n@@ -1,2 +1,2 @@\n"
    one += "------BEGIN PRIVATE KEY-----\n+-----BEGIN PRIVATE KEY----- \n MIIE\n"
    two = "--- a/y.py\n+++ b/y.py\n@@ -1 +1 @@\n-Y  =  2\n+Y = 2\n"
    out = redactor().redact_string(one + two)
    assert out.count(WITHHELD) == 1 and "MIIE" not in out
    assert out.endswith(two)  # the key never ended in k.py's diff: y.py's hunks are shown all the same


def test_short_clean_texts_are_remembered_and_texts_with_secrets_are_redacted_every_time() -> None:
    red = Redactor(values=[])
    secret = "token=" + "ab12" * 6
    assert red.redact("message") == "message" and "message" in red._clean
    for _ in range(3):
        assert red.redact(secret) != secret and secret not in red._clean
    assert red.redactions == 3, "each answer that holds it hides it (it is never remembered as clean)"
    long_clean = "x" * 200
    assert red.redact(long_clean) == long_clean and long_clean not in red._clean
    for i in range(20_000):  # bounded
        red.redact(f"clean {i}")
    assert len(red._clean) <= 16_384
