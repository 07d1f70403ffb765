"""Contracts the rest of the service builds on: torch-free models, a complete check registry
whose every type has its three parts (parameters, observer, judge)."""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import contract.checks
import graders.checks
import sandboxed.observe
from contract.checks import PARAMS, CheckSpec
from contract.checks.base import CheckBase
from core.settings import PROJECT_ROOT
from graders.checks import REGISTRY
from graders.checks.base import FactsBase
from sandbox.checkpoints import STANDINS
from sandboxed.observe import OBSERVERS

TORCH_FREE = [
    "contract.job",
    "contract.fork_wire",
    "contract.checks",
    "graders.spec",
    "graders.result",
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
    assert "torch" in torch_modules_after_import("sandboxed.introspect")


def test_every_spec_type_has_its_three_parts():
    assert len(PARAMS) == 9
    assert set(PARAMS) == set(OBSERVERS) == set(REGISTRY)


@pytest.mark.parametrize("check_type", sorted(PARAMS))
def test_every_check_type_has_parameters_an_observer_and_a_judge(check_type):
    params, observer, judge = PARAMS[check_type], OBSERVERS[check_type], REGISTRY[check_type]
    assert issubclass(params, CheckBase)
    assert typing.get_args(params.model_fields["type"].annotation) == (check_type,)
    assert params.__module__ == f"contract.checks.{check_type}"
    assert observer.__name__ == f"sandboxed.observe.{check_type}"
    assert judge.__name__ == f"graders.checks.{check_type}"
    for module in (observer, judge):
        assert check_type == module.TYPE
        assert module.Params is params
    assert callable(observer.observe)
    assert issubclass(judge.Facts, FactsBase)
    assert callable(judge.judge)
    assert not hasattr(observer, "judge") and not hasattr(judge, "observe")


@pytest.mark.parametrize("package", [contract.checks, sandboxed.observe, graders.checks])
def test_every_check_module_is_registered(package):
    folder = Path(package.__file__).parent
    files = {p.stem for p in folder.glob("*.py")} - {"base", "__init__"}
    assert files == set(PARAMS)


def test_the_spec_union_holds_exactly_the_registered_checks():
    union = typing.get_args(CheckSpec)[0]
    assert set(typing.get_args(union)) == set(PARAMS.values())


@pytest.mark.parametrize(("builder", "enum", "member", "filename"), STANDINS)
def test_standin_checkpoints_use_torchvision_file_names(builder, enum, member, filename):
    from torchvision import models

    assert callable(getattr(models, builder))
    assert getattr(models, enum)[member].url.rsplit("/", 1)[-1] == filename
