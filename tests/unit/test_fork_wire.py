"""The fast path's wire format, as the host writes it and the in-sandbox server reads it back."""

from __future__ import annotations

import pytest

from contract.fork_wire import (
    end_line,
    end_prefix,
    new_token,
    parse_end_fields,
    parse_request_header,
    request_header,
)

TOKEN = "0123456789abcdef" * 2


def test_a_request_line_is_pinned_and_reads_back():
    assert request_header(1234, TOKEN, 56) == b"JOB 1234 " + TOKEN.encode() + b" 56\n"
    assert parse_request_header(request_header(1234, TOKEN, 56)[:-1]) == (1234, TOKEN, 56)
    assert parse_request_header(request_header(7, new_token())[:-1])[::2] == (7, 0)


@pytest.mark.parametrize(
    "line",
    [
        b"JOB 3 short 0",
        b"JOB -1 " + TOKEN.encode() + b" 0",
        b"JOB 3 " + TOKEN.encode(),
        b"JOBS 3 " + TOKEN.encode() + b" 0",
        b"JOB 3 " + TOKEN.encode() + b" 0 more",
        b"JOB 3.0 " + TOKEN.encode() + b" 0",
        b"",
    ],
)
def test_a_malformed_request_line_is_refused(line):
    assert parse_request_header(line) is None


def test_an_end_line_is_pinned_and_its_fields_read_back():
    fields = {"job": 2, "exit": 137, "signal": 9, "oom": 1, "clean": 0, "recycle": 1}
    line = end_line(TOKEN, fields)
    assert line == (
        b"\nGRADER-JOB-END "
        + TOKEN.encode()
        + b" job=2 exit=137 signal=9 oom=1 clean=0 recycle=1\n"
    )
    assert line.startswith(end_prefix(TOKEN))
    assert parse_end_fields(line[len(end_prefix(TOKEN)) : -1]) == fields
    assert parse_end_fields(b"exit=0 junk lost=x oom=1") == {"exit": 0, "oom": 1}


def test_tokens_are_fresh_hex():
    first, second = new_token(), new_token()
    assert first != second and len(first) == 32 and int(first, 16) >= 0
