"""The audit log: one JSON line per record, a fixed field order, rotation, and no failure modes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import anyio
import pytest

from mcp_server import redact
from mcp_server.audit import AuditLog, AuditRecord
from mcp_server.redact import REDACTED, Redactor

pytestmark = pytest.mark.anyio

FIELDS = ["time", "connection", "tool", "argv", "cwd", "exit_status", "duration_s", "output_bytes", "outcome"]


def record(i: int = 0, *, argv: list[str] | None = None) -> AuditRecord:
    return AuditRecord(
        time="2030-01-01T00:00:00.000Z",
        connection="websocket-7",
        tool="lint",
        argv=argv if argv is not None else ["ruff", "check", "--", f"file{i}.py"],
        cwd="/work/project",
        exit_status=1,
        duration_s=0.25,
        output_bytes=1234,
        outcome="exited",
    )


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def test_one_line_per_record_in_a_fixed_field_order(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a" / "audit.jsonl", max_bytes=1 << 20, backups=1)  # the directory is made
    await log.record(record(1))
    await log.record(record(2, argv=["python", "-c", "print('a')\nprint('b')", "ünïcödé"]))
    raw = lines(tmp_path / "a" / "audit.jsonl")
    assert len(raw) == 2  # a newline inside an argument stays inside its JSON string
    first = json.loads(raw[0], object_pairs_hook=list)
    assert [key for key, _ in first] == FIELDS
    assert json.loads(raw[1])["argv"][-1] == "ünïcödé"
    # Deterministic: the same record always gives the same bytes.
    assert raw[0] == json.dumps(json.loads(raw[0]), ensure_ascii=False, separators=(",", ":"))


def test_record_time_is_utc_with_milliseconds() -> None:
    stamp = AuditRecord.now()
    assert stamp.endswith("Z") and len(stamp) == len("2030-01-01T00:00:00.000Z")


async def test_rotation_keeps_the_configured_number_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=600, backups=2)
    for i in range(40):
        await log.record(record(i))
    names = sorted(os.listdir(tmp_path))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    kept = lines(path.with_name("audit.jsonl.2")) + lines(path.with_name("audit.jsonl.1")) + lines(path)
    for name in names:
        assert (tmp_path / name).stat().st_size <= 600
    # Whole lines only, the newest last, in order.
    numbers = [int(json.loads(line)["argv"][-1][4:-3]) for line in kept]
    assert numbers == list(range(40 - len(numbers), 40))


async def test_rotation_without_backups_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=600, backups=0)
    for i in range(20):
        await log.record(record(i))
    assert os.listdir(tmp_path) == ["audit.jsonl"]
    assert json.loads(lines(path)[-1])["argv"][-1] == "file19.py"


async def test_the_file_is_private(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=1 << 20, backups=1)
    await log.record(record())
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


async def test_no_path_means_no_audit_file(tmp_path: Path) -> None:
    log = AuditLog(None, max_bytes=1 << 20, backups=1)
    await log.record(record())
    assert os.listdir(tmp_path) == []


async def test_an_unwritable_log_warns_once_and_never_fails_the_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("")
    log = AuditLog(tmp_path / "file" / "audit.jsonl", max_bytes=1 << 20, backups=1)
    caplog.set_level(logging.WARNING, logger="mcp_server.audit")
    for _ in range(3):
        await log.record(record())
    warnings = [r for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1


async def test_concurrent_records_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1 << 20, backups=1)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(log.record, record(i, argv=["x" * 5000, str(i)]))
    raw = lines(path)
    assert sorted(int(json.loads(line)["argv"][1]) for line in raw) == list(range(50))


async def test_a_cancelled_caller_is_still_audited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1 << 20, backups=1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await log.record(record())
    assert len(lines(path)) == 1


async def test_rotated_files_are_private_too_and_an_oversized_record_keeps_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1024, backups=2)
    for i in range(30):
        await log.record(record(i))
    for name in os.listdir(tmp_path):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    current = lines(path)
    huge = record(99, argv=["x" * 5000])
    await log.record(huge)  # rotates once: what was current becomes .1, the huge record is alone in the file
    await log.record(huge)  # rotates again
    assert lines(path.with_name("audit.jsonl.2")) == current
    assert len(lines(path.with_name("audit.jsonl.1"))) == 1 and len(lines(path)) == 1


# --- redaction: the audit log redacts every record itself ----------------------------------------

GHP = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0" + "A" * 16
ENV_SECRET = "audit-env-secret-42"


def raw_record() -> AuditRecord:
    """A record as a careless writer would make it: secrets in every string field."""
    return AuditRecord(
        time="2030-01-01T00:00:00.000Z",
        connection=f"websocket {ENV_SECRET}",
        tool=f"lint token={GHP}",
        argv=["python", "-m", "pytest", f"tests/t.py::test[{GHP}]", "password=hunter2raw", ENV_SECRET],
        cwd=f"/work/{ENV_SECRET}",
        exit_status=1,
        duration_s=0.25,
        output_bytes=10,
        outcome=f"crashed AKIAIOSFODNN7EXAMPLE {ENV_SECRET}",
    )


async def test_a_record_written_with_raw_secrets_never_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1 << 20, backups=1, redactor=Redactor([ENV_SECRET]))
    await log.record(raw_record())
    text = path.read_text(encoding="utf-8")
    for secret in (ENV_SECRET, GHP, "hunter2raw", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in text
    (line,) = lines(path)
    data = json.loads(line, object_pairs_hook=list)
    assert [key for key, _ in data] == FIELDS  # the shape is kept: same fields, same types
    fields = dict(data)
    assert fields["argv"][:3] == ["python", "-m", "pytest"] and fields["argv"][3] == f"tests/t.py::test[{REDACTED}]"
    assert fields["exit_status"] == 1 and fields["duration_s"] == 0.25 and fields["output_bytes"] == 10
    # An already redacted record is written the same (a writer that redacts loses nothing).
    await log.record(AuditRecord(**{**fields, "argv": list(fields["argv"])}))
    assert lines(path)[1] == line


async def test_without_its_own_redactor_the_log_uses_the_process_redactor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redact, "_process_redactor", Redactor([ENV_SECRET]))
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1 << 20, backups=1)
    await log.record(raw_record())
    text = path.read_text(encoding="utf-8")
    assert ENV_SECRET not in text and GHP not in text and REDACTED in text
