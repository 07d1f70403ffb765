"""Processes that self-test the same version at once (workers starting together) run its
reference once: one computes the expected facts, the others wait and read them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

pytestmark = [pytest.mark.slow]

SPEC = PROJECT_ROOT / "tests" / "adversarial" / "specs" / "freeze-attacks.yaml"
COMPUTED_BEFORE = "expected facts already computed for this version"


def test_versions_self_tested_together_are_computed_once(tmp_path: Path, settings):
    data = tmp_path / "data"
    data.mkdir()
    (data / "torch_home").symlink_to(settings.torch_home)  # the stand-in checkpoints
    env = {**os.environ, "GRADER_DATA_DIR": str(data)}
    gradectl = str(Path(sys.executable).parent / "gradectl")
    command = [gradectl, "validate", "--backend", "process", str(SPEC)]
    runs = [
        subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sum(COMPUTED_BEFORE in out for out in outputs) == 1, outputs
    assert len(list((data / "expected" / "adversarial-freeze").glob("*/meta.json"))) == 1
