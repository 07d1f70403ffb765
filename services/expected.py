"""Storage of expected facts: the reference run's facts for one spec version, on disk.

Keyed by the spec's digest and the grader's own version (the code of both sides, the
harness and the observers as the judges, and the torch release), so a change to either recomputes them instead of reusing stale ones.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

from core.settings import PROJECT_ROOT, Settings
from graders.facts import dump_facts, load_stored_facts
from graders.judge import Expected
from graders.spec import CodeTask, spec_digest

# The grader's code: what runs in the sandbox, its contract with the host, the judges.
GRADER_PACKAGES = ("contract", "sandboxed", "graders")


@lru_cache
def grader_version() -> str:
    h = hashlib.sha256()
    paths = [p for package in GRADER_PACKAGES for p in (PROJECT_ROOT / package).rglob("*.py")]
    for path in sorted(paths):
        h.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        h.update(path.read_bytes())
    h.update(f"torch={version('torch')} torchvision={version('torchvision')}".encode())
    return h.hexdigest()[:16]


def _folder(settings: Settings, spec: CodeTask) -> Path:
    return settings.expected_dir / spec.id / f"{spec_digest(spec)[:24]}-{grader_version()}"


@contextmanager
def computing(settings: Settings, spec: CodeTask) -> Iterator[None]:
    """Held while one process computes (or reads) the expected facts of `spec`'s version:
    processes that self-test the same version together (workers starting at once) compute
    it once, the others wait and read what it stored."""
    folder = settings.expected_dir / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{_folder(settings, spec).name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_expected(settings: Settings, spec: CodeTask) -> Expected | None:
    folder = _folder(settings, spec)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        facts = load_stored_facts(
            (folder / "manifest.json").read_bytes(), (folder / "tensors.safetensors").read_bytes()
        )
    except FileNotFoundError:
        return None
    return Expected(facts=facts, baseline_passing=frozenset(meta["baseline_passing"]))


def save_expected(settings: Settings, spec: CodeTask, expected: Expected) -> None:
    folder = _folder(settings, spec)
    folder.mkdir(parents=True, exist_ok=True)
    manifest, tensors = dump_facts(expected.facts)
    tmp = folder / f".meta.{os.getpid()}"
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "tensors.safetensors").write_bytes(tensors)
    tmp.write_text(json.dumps({"baseline_passing": sorted(expected.baseline_passing)}))
    tmp.replace(folder / "meta.json")  # written last: its presence means the rest is complete
