"""Contracts the rest of the service builds on: torch-free models, a complete check registry."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import graders.checks
from core.settings import PROJECT_ROOT
from graders.checks import REGISTRY, CheckSpec
from graders.checks.base import CheckBase, FactsBase
from sandbox.checkpoints import STANDINS

TORCH_FREE = [
    "graders.spec",
    "graders.result",
    "graders.job",
    "graders.judge",
    "graders.facts",
    "services.answers",
]


def torch_modules_after_import(module: str) -> list[str]:
    """The torch modules a fresh interpreter holds after importing `module`."""
    probe = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_contract_modules_do_not_import_torch(module):
    assert torch_modules_after_import(module) == []


def test_the_probe_sees_torch_when_a_module_imports_it():
    assert "torch" in torch_modules_after_import("graders.introspect")


@pytest.mark.parametrize("check_type", sorted(REGISTRY))
def test_every_registered_check_has_both_halves(check_type):
    module = REGISTRY[check_type]
    assert check_type == module.TYPE
    assert Path(module.__file__).stem == check_type
    assert issubclass(module.Params, CheckBase)
    assert issubclass(module.Facts, FactsBase)
    assert typing.get_args(module.Params.model_fields["type"].annotation) == (check_type,)
    assert callable(module.observe)
    assert callable(module.judge)


def test_every_check_module_is_registered():
    folder = Path(graders.checks.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"base", "__init__"}
    assert files == set(REGISTRY)


def test_the_spec_union_holds_exactly_the_registered_checks():
    union = typing.get_args(CheckSpec)[0]
    assert set(typing.get_args(union)) == {m.Params for m in REGISTRY.values()}


@pytest.mark.parametrize(("builder", "enum", "member", "filename"), STANDINS)
def test_standin_checkpoints_use_torchvision_file_names(builder, enum, member, filename):
    from torchvision import models

    assert callable(getattr(models, builder))
    assert getattr(models, enum)[member].url.rsplit("/", 1)[-1] == filename
