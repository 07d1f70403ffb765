"""The job a sandbox receives on stdin, and the frame its facts come back in.

The job carries the task's setup code, the student's code and the checks to observe;
never the reference solution (unless the run *is* the reference run, at validation)
and never expected facts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.checks import CheckSpec

JOB_SCHEMA_VERSION = 1
MAX_JOB_BYTES = 4 * 1024 * 1024
FRAME_MAGIC = b"GRADER-FACTS/1"
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_TENSOR_BYTES = 64 * 1024 * 1024
# What a backend reads from the harness's stdout: one frame, plus slack for the header.
MAX_CHANNEL_BYTES = MAX_MANIFEST_BYTES + MAX_TENSOR_BYTES + 4096


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = JOB_SCHEMA_VERSION
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$", description="Marks the harness's own frame.")
    task_id: str
    setup: str
    code: str
    checks: list[CheckSpec]
    seed: int = 0
    max_output_bytes: int = 64 * 1024
    device: Literal["cpu", "cuda"] = "cpu"


def ready_marker(nonce: str) -> bytes:
    """Written by the harness just before the student's code runs; starts the answer's clock."""
    return b"\nGRADER-READY " + nonce.encode() + b"\n"


def frame_header(nonce: str, manifest_len: int, tensors_len: int) -> bytes:
    return b"\n" + FRAME_MAGIC + f" {nonce} {manifest_len} {tensors_len}\n".encode()
