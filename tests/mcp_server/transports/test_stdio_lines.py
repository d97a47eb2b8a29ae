"""stdio's line splitter as pure state: bounded buffering, one error per oversized line."""

from __future__ import annotations

from mcp_server.transports.stdio import LineSplitter


def split(splitter: LineSplitter, *chunks: bytes) -> list[bytes | str]:
    out: list[bytes | str] = []
    for chunk in chunks:
        out += ["TOO_LARGE" if line is LineSplitter.TOO_LARGE else line for line in splitter.feed(chunk)]  # type: ignore[misc]
    return out


def test_lines_across_chunks_and_a_last_line_without_newline() -> None:
    splitter = LineSplitter(100)
    assert split(splitter, b'{"a"', b":1}\n{", b'"b":2}\n\n', b"tail") == [b'{"a":1}', b'{"b":2}', b""]
    assert list(splitter.end()) == [b"tail"]


def test_an_oversized_line_is_reported_once_never_buffered_and_the_next_line_survives() -> None:
    splitter = LineSplitter(1024)
    chunk = b"y" * 65536
    out: list[bytes | str] = split(splitter, b'{"id": 1, "x": "')
    for _ in range(1600):  # a 100 MB line, in the reader's chunk size
        out += split(splitter, chunk)
        assert len(splitter._buffer) <= 1024
    out += split(splitter, b'"}\n{"id": 2}\n')
    assert out == ["TOO_LARGE", b'{"id": 2}']
    assert list(splitter.end()) == []


def test_a_line_of_exactly_the_limit_passes_and_one_byte_more_does_not() -> None:
    splitter = LineSplitter(10)
    assert split(splitter, b"0123456789\n", b"0123456789A\n", b"ok\n") == [b"0123456789", "TOO_LARGE", b"ok"]
