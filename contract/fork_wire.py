"""The fast path's wire format, shared by the host (sandbox/fork_sandbox.py) and the
in-sandbox server (sandboxed/fork_server.py): the request line that precedes each job and
the end line that follows its output. Standard library only, so the host imports no
in-sandbox code and no torch.
"""

from __future__ import annotations

import contextlib
import secrets

END_MAGIC = b"GRADER-JOB-END"
REQUEST_MAGIC = b"JOB"
MAX_REQUEST_LINE = 128
TOKEN_BYTES = 16  # sent as 32 hex digits


def new_token() -> str:
    """A job's token: the host sends it after the job's child was forked, so only the
    server knows it, and the end line carrying it cannot come from the job."""
    return secrets.token_hex(TOKEN_BYTES)


def request_header(length: int, token: str, shared_length: int = 0) -> bytes:
    """`JOB <length> <token> <shared length>`: the shared setup's bytes, then the job's."""
    return REQUEST_MAGIC + f" {length} {token} {shared_length}\n".encode()


def parse_request_header(line: bytes) -> tuple[int, str, int] | None:
    """A request line without its newline, as (length, token, shared length); None if
    malformed. Sizes are the reader's to bound."""
    parts = line.decode("ascii", errors="replace").split()
    if len(parts) != 4 or parts[0].encode() != REQUEST_MAGIC:
        return None
    _, length, token, shared_length = parts
    if not (length.isdigit() and shared_length.isdigit()) or len(token) != 2 * TOKEN_BYTES:
        return None
    return int(length), token, int(shared_length)


def end_prefix(token: str) -> bytes:
    """What the host looks for on stdout: only the server knows the token."""
    return b"\n" + END_MAGIC + f" {token} ".encode()


def end_line(token: str, fields: dict[str, int]) -> bytes:
    body = " ".join(f"{key}={value}" for key, value in fields.items())
    return end_prefix(token) + f"{body}\n".encode()


def parse_end_fields(line: bytes) -> dict[str, int]:
    """The fields of an end line, what follows its prefix; words that are not
    `key=integer` are left out."""
    fields = {}
    for word in line.decode("ascii", errors="replace").split():
        key, _, value = word.partition("=")
        with contextlib.suppress(ValueError):
            fields[key] = int(value)
    return fields
