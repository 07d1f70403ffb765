"""Host side: find the harness's frame in a sandbox's stdout and parse it strictly.

The frame is untrusted data. It is located by the job's nonce, size-capped, parsed as
JSON into a closed schema, and its tensors are read with safetensors (numpy, no pickle).
Every string it holds (names, messages, output, tensor names) is made printable: JSON's
`\\udc80` escape gives a lone surrogate, which no UTF-8 text can hold, so it and control
characters become visible `\\uXXXX` escapes before anything judges, stores or serves
them. Nothing here executes or imports anything the sandbox produced.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.numpy import load as load_tensors

from contract.job import FRAME_MAGIC, MAX_MANIFEST_BYTES, MAX_TENSOR_BYTES
from graders.errors import FactsError
from graders.result import printable, printable_data

MAX_TENSORS = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunError(_Strict):
    message: str = Field(max_length=10_000)
    traceback: str = Field(max_length=20_000)


class Observation(_Strict):
    facts: dict[str, Any] | None = None
    error: str | None = Field(None, max_length=4000)
    reason: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")


class Manifest(_Strict):
    schema_version: Literal[1]
    status: Literal["ok", "setup_error", "compile_error", "runtime_error", "memory_limit"]
    error: RunError | None
    notes: list[str] = Field(max_length=20)
    stdout: str = Field(max_length=8 * 1024 * 1024)
    stdout_bytes: int = Field(ge=0)
    stderr: str = Field(max_length=8 * 1024 * 1024)
    stderr_bytes: int = Field(ge=0)
    observations: dict[str, Observation] = Field(max_length=100)
    timings: dict[str, float] = Field(max_length=10)
    device: Literal["cpu", "cuda"]


class Facts(_Strict):
    """A parsed frame: the manifest and each check's tensors, keyed by check name."""

    manifest: Manifest
    tensors: Mapping[str, Mapping[str, np.ndarray]]

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


def _frame_pattern(nonce: str) -> re.Pattern[bytes]:
    return re.compile(
        b"\n"
        + re.escape(FRAME_MAGIC)
        + b" "
        + re.escape(nonce.encode())
        + rb" (\d{1,9}) (\d{1,10})\n"
    )


def _reject_constants(name: str) -> float:
    # NaN and infinities are legitimate facts (a diverged loss); only these three spellings.
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def parse_frame(stdout: bytes, nonce: str) -> Facts:
    matches = list(_frame_pattern(nonce).finditer(stdout))
    if not matches:
        raise FactsError("no facts frame in the sandbox's output")
    match = matches[-1]
    manifest_len, tensors_len = int(match.group(1)), int(match.group(2))
    if manifest_len > MAX_MANIFEST_BYTES or tensors_len > MAX_TENSOR_BYTES:
        raise FactsError(
            f"facts too large: manifest {manifest_len} bytes, tensors {tensors_len} bytes"
        )
    start = match.end()
    body = stdout[start : start + manifest_len]
    blob = stdout[start + manifest_len : start + manifest_len + tensors_len]
    if len(body) != manifest_len or len(blob) != tensors_len:
        raise FactsError("the facts frame is truncated")
    try:
        data = json.loads(body, parse_constant=_reject_constants)
        if isinstance(data, dict) and isinstance(data.get("observations"), dict):
            # Each check's facts travel as JSON text, so no observer can write another's.
            data["observations"] = {
                name: json.loads(text, parse_constant=_reject_constants)
                if isinstance(text, str)
                else text
                for name, text in data["observations"].items()
            }
        # Two names that escaping makes equal are refused, not merged: merging would hide one.
        manifest = Manifest.model_validate(printable_data(data, unique_keys=True))
    except (ValueError, ValidationError, RecursionError) as exc:  # nested past any real fact
        raise FactsError(f"malformed facts manifest: {str(exc)[:500]}") from None
    return Facts(manifest=manifest, tensors=_split_tensors(blob, set(manifest.observations)))


def _split_tensors(blob: bytes, checks: set[str]) -> dict[str, dict[str, np.ndarray]]:
    if not blob:
        return {}
    try:
        flat = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise FactsError(f"malformed facts tensors: {str(exc)[:300]}") from None
    if len(flat) > MAX_TENSORS:
        raise FactsError(f"too many fact tensors: {len(flat)}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, values in flat.items():
        check, sep, name = printable(key).partition("/")
        if not sep or check not in checks:
            raise FactsError(f"fact tensor {key[:100]!r} belongs to no check")
        if name in out.setdefault(check, {}):
            raise FactsError(f"two fact tensors read {check}/{name[:100]!r} once made printable")
        out[check][name] = values
    return out


def dump_facts(facts: Facts) -> tuple[bytes, bytes]:
    """Serialise parsed facts for storage: (manifest JSON, safetensors blob)."""
    from safetensors.numpy import save as save_tensors

    flat = {f"{check}/{name}": v for check, ts in facts.tensors.items() for name, v in ts.items()}
    return facts.manifest.model_dump_json().encode(), (save_tensors(flat) if flat else b"")


def load_stored_facts(manifest_json: bytes, blob: bytes) -> Facts:
    manifest = Manifest.model_validate_json(manifest_json)
    return Facts(manifest=manifest, tensors=_split_tensors(blob, set(manifest.observations)))
