"""The reasons a failing verdict carries, on hand-made facts: each names what the judge
measured (a partial freeze, a frozen superset, evaluation mode with nothing frozen, more
outputs than classes, weights that all differ or only some, a head that lacks its bias),
never how the answer was written, so that a task's mistake is told exactly when the
answer made it. Every code a judge gives is one its module declares."""

from __future__ import annotations

import re

import numpy as np
import pytest

from graders.checks import (
    REGISTRY,
    architecture,
    frozen_backbone,
    output_shape,
    pretrained_weights,
    python,
    reasons_of,
    trainable_params,
    variable_type,
)
from graders.checks.base import REASON_PATTERN, Observed, Verdict
from tests.unit.test_backbone_judge import head, layers, reference, tensor, tensors, with_

MINE = (
    architecture,
    frozen_backbone,
    output_shape,
    pretrained_weights,
    python,
    trainable_params,
    variable_type,
)


@pytest.mark.parametrize("module", MINE, ids=lambda m: m.TYPE)
def test_each_type_declares_kebab_case_reasons_with_their_meaning(module):
    assert module.REASONS, module.TYPE
    for code, meaning in module.REASONS.items():
        assert re.fullmatch(REASON_PATTERN, code), code
        assert len(code) <= 24, code  # `gradectl schema --reasons` aligns them in 24 columns
        assert meaning and meaning == meaning.strip(), code
    assert REGISTRY[module.TYPE] is module


def verdict_of(module, params: dict, have: dict, want: dict | None, tensors_=None) -> Verdict:
    check = module.Params.model_validate({"name": "c", "type": module.TYPE, **params})
    got = Observed(module.Facts.model_validate(have), (tensors_ or ({}, {}))[0])
    expected = (
        None
        if want is None
        else Observed(module.Facts.model_validate(want), tensors_[1] if tensors_ else {})
    )
    verdict = module.judge(check, got, expected)
    assert verdict.reasons <= reasons_of(module.TYPE).keys(), verdict.reasons
    if verdict.passed:
        assert not verdict.reasons
    return verdict


# --- trainable_params -----------------------------------------------------------------


def params(trainable: dict[str, bool], training: bool | None = True) -> dict:
    return {
        "parameters": {n: {"numel": 10, "requires_grad": t} for n, t in trainable.items()},
        "training": training,
    }


ALL_FROZEN = {"conv.weight": False, "bn.weight": False, "fc.weight": False, "fc.bias": False}
HEAD_TRAINS = {**ALL_FROZEN, "fc.weight": True, "fc.bias": True}
NOTHING_FROZEN = dict.fromkeys(ALL_FROZEN, True)

TRAINABLE = [
    # (name, the reference's flags, the answer's facts, reasons)
    ("a full freeze", ALL_FROZEN, params(ALL_FROZEN), set()),
    (
        "nothing frozen, in training mode",
        ALL_FROZEN,
        params(NOTHING_FROZEN),
        {"still-trainable", "none-frozen"},
    ),
    (
        "nothing frozen, in evaluation mode",
        ALL_FROZEN,
        params(NOTHING_FROZEN, training=False),
        {"still-trainable", "eval-mode-unfrozen"},
    ),
    (
        "nothing frozen, its mode unreadable",
        ALL_FROZEN,
        params(NOTHING_FROZEN, training=None),
        {"still-trainable", "none-frozen"},
    ),
    (
        "the last layer frozen only",
        ALL_FROZEN,
        params({**NOTHING_FROZEN, "fc.weight": False, "fc.bias": False}),
        {"still-trainable", "partly-frozen"},
    ),
    (
        "a partial freeze in evaluation mode is a partial freeze",
        ALL_FROZEN,
        params({**NOTHING_FROZEN, "fc.bias": False}, training=False),
        {"still-trainable", "partly-frozen"},
    ),
    (
        "the head frozen too: a strict superset of the frozen set",
        HEAD_TRAINS,
        params(ALL_FROZEN),
        {"trainable-frozen", "extra-frozen"},
    ),
    (
        "the head's bias frozen, the backbone unfrozen",
        HEAD_TRAINS,
        params({**NOTHING_FROZEN, "fc.bias": False}),
        {"trainable-frozen", "still-trainable"},
    ),
    (
        "a layer nested anew, all frozen: frozen as asked (the layers are other checks' business)",
        ALL_FROZEN,
        params({"conv.weight": False, "bn.weight": False, "fc.weight": False, "fc.0.bias": False}),
        set(),
    ),
    (
        "a trainable parameter added to a frozen model",
        ALL_FROZEN,
        params({**ALL_FROZEN, "fc.0.bias": True}),
        {"parameters-added"},
    ),
    (
        "a parameter gone where the reference trains some",
        HEAD_TRAINS,
        params({"conv.weight": False, "fc.weight": True, "fc.bias": True}),
        {"parameters-missing"},
    ),
]


@pytest.mark.parametrize(
    ("want", "have", "reasons"), [c[1:] for c in TRAINABLE], ids=[c[0] for c in TRAINABLE]
)
def test_trainable_params_reasons(want, have, reasons):
    verdict = verdict_of(trainable_params, {}, have, params(want))
    assert verdict.reasons == reasons, verdict.message
    assert verdict.passed is (not reasons)


def test_a_layer_made_anew_after_freezing_is_told_apart_from_a_partial_freeze():
    have = params(ALL_FROZEN)
    have["parameters"]["fc.weight"] = {"numel": 5120, "requires_grad": True}
    have["parameters"]["fc.bias"] = {"numel": 7, "requires_grad": True}
    verdict = verdict_of(trainable_params, {}, have, params(ALL_FROZEN))
    assert verdict.reasons == {"still-trainable", "new-layer-trainable"}, verdict.message


def test_evaluation_mode_is_no_reason_when_the_reference_is_in_evaluation_mode_too():
    verdict = verdict_of(
        trainable_params, {}, params(NOTHING_FROZEN, False), params(ALL_FROZEN, False)
    )
    assert verdict.reasons == {"still-trainable", "none-frozen"}


def test_a_model_without_parameters():
    verdict = verdict_of(trainable_params, {}, {"parameters": {}}, params(ALL_FROZEN))
    assert verdict.reasons == {"no-parameters"}


def test_facts_without_the_training_flag_still_parse():
    assert trainable_params.Facts.model_validate({"parameters": {}}).training is None


# --- pretrained_weights ---------------------------------------------------------------


def state(**digests) -> dict:
    """conv.weight, fc.weight (parameters), bn.running_mean, bn.num_batches_tracked (buffers)."""
    base = {
        "conv.weight": "a",
        "fc.weight": "b",
        "bn.running_mean": "c",
        "bn.num_batches_tracked": "d",
    }
    base |= digests
    return {
        "state": {
            name: {
                "kind": "buffer" if name.startswith("bn.") else "parameter",
                "shape": [10, 4] if name == "fc.weight" and digest == "b10" else [4],
                "dtype": "float16" if digest == "half" else "float32",
                "digest": f"{sum(map(ord, digest)):064x}",
            }
            for name, digest in base.items()
            if digest is not None
        }
    }


WEIGHTS = [
    ("random weights (counters equal)", state(**{"conv.weight": "x", "fc.weight": "y", "bn.running_mean": "z"}), {"all-weights-differ", "buffers-differ"}),
    ("one layer re-initialised", state(**{"fc.weight": "y"}), {"some-weights-differ"}),
    ("only the statistics moved", state(**{"bn.running_mean": "z", "bn.num_batches_tracked": "e"}), {"buffers-differ", "statistics-moved"}),
    ("statistics and weights", state(**{"bn.running_mean": "z", "fc.weight": "y"}), {"buffers-differ", "some-weights-differ"}),
    ("cast to half", state(**{"conv.weight": "half"}), {"tensors-retyped"}),
    ("another head size", state(**{"fc.weight": "b10"}), {"tensors-reshaped"}),
    ("another architecture: no value compared", state(**{"fc.weight": None, "conv.weight": "x", "extra.weight": "q"}), {"tensors-missing", "tensors-added"}),
]  # fmt: skip


@pytest.mark.parametrize(("have", "reasons"), [c[1:] for c in WEIGHTS], ids=[c[0] for c in WEIGHTS])
def test_pretrained_weights_reasons(have, reasons):
    verdict = verdict_of(pretrained_weights, {}, have, state())
    assert not verdict.passed
    assert verdict.reasons == reasons, verdict.message


def test_moved_statistics_are_not_called_weights_that_were_not_loaded():
    have = state(**{"bn.running_mean": "z", "bn.num_batches_tracked": "e"})
    message = verdict_of(pretrained_weights, {}, have, state()).message
    assert "not loaded" not in message
    assert (
        "2 of 4 state tensors differ from the pre-trained model's, all of them buffers" in message
    )
    assert "every weight equals the pre-trained one" in message
    assert "the batch-norm statistics changed" in message


# --- architecture ---------------------------------------------------------------------


def arch(**changes) -> dict:
    base = {
        "class_name": "torchvision.models.resnet.ResNet",
        "modules": {
            "conv1": "torch.nn.modules.conv.Conv2d",
            "fc": "torch.nn.modules.linear.Linear",
        },
        "settings": {"": {}, "conv1": {"stride": [2, 2]}, "fc": {"out_features": 1000}},
        "parameters": {"conv1.weight": [64, 3, 7, 7], "fc.weight": [1000, 512], "fc.bias": [1000]},
    }
    return base | changes


ARCHITECTURES = [
    ("an fc where none belongs", "fc", {"exists": True, "class_name": "torch.nn.modules.linear.Linear"}, {"exists": False}, {"unexpected-module"}),
    ("the module gone", "fc", {"exists": False}, arch(), {"missing"}),
    ("another family", "", arch(class_name="torchvision.models.mobilenetv2.MobileNetV2"), arch(), {"other-class"}),
    (
        "the head wrapped",
        "",
        arch(
            modules={**arch()["modules"], "fc": "torch.nn.modules.container.Sequential", "fc.0": "torch.nn.modules.linear.Linear"},
            settings={"": {}, "conv1": {"stride": [2, 2]}, "fc": {}, "fc.0": {"out_features": 1000}},
            parameters={"conv1.weight": [64, 3, 7, 7], "fc.0.weight": [1000, 512], "fc.0.bias": [1000]},
        ),
        arch(),
        {"layers-added", "layers-replaced", "parameters-missing", "parameters-added"},
    ),
    (
        "a 10-class head",
        "",
        arch(settings={**arch()["settings"], "fc": {"out_features": 10}}, parameters={**arch()["parameters"], "fc.weight": [10, 512], "fc.bias": [10]}),
        arch(),
        {"settings-changed", "shapes-changed"},
    ),
    ("a layer removed", "", arch(modules={"fc": "torch.nn.modules.linear.Linear"}), arch(), {"layers-removed"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("module", "have", "want", "reasons"),
    [c[1:] for c in ARCHITECTURES],
    ids=[c[0] for c in ARCHITECTURES],
)
def test_architecture_reasons(module, have, want, reasons):
    verdict = verdict_of(architecture, {"module": module}, have, want)
    assert not verdict.passed
    assert verdict.reasons == reasons, verdict.message


# --- output_shape ---------------------------------------------------------------------

FEATURES = np.linspace(0.0, 3.0, 8, dtype=np.float32).reshape(2, 4)
WANT = {"shape": [2, 10], "features": {"found": True, "calls": 1, "shape": [2, 4]}}

OUTPUTS = [
    ("100 classes", {"shape": [2, 100]}, {"too-many-outputs"}),
    ("1 class", {"shape": [2, 1]}, {"too-few-outputs"}),
    ("0 classes", {"shape": [2, 0]}, {"no-outputs"}),
    ("another rank", {"shape": [2, 10, 1]}, {"other-shape"}),
    ("another batch size", {"shape": [1, 10]}, {"other-shape"}),
    ("the forward raised", {"error": "`model.fc` raised RuntimeError on an input"}, {"raised"}),
]


@pytest.mark.parametrize(("have", "reasons"), [c[1:] for c in OUTPUTS], ids=[c[0] for c in OUTPUTS])
def test_output_shape_reasons(have, reasons):
    verdict = verdict_of(output_shape, {"input_shape": [2, 4]}, have, {"shape": [2, 10]})
    assert not verdict.passed
    assert verdict.reasons == reasons, verdict.message


FEATURE_CASES = [
    ("the head never called", {"found": True, "calls": 0}, None, {"not-called"}),
    ("no module there", {"found": False}, None, {"missing"}),
    ("not a tensor", {"found": True, "calls": 1}, None, {"features-not-tensor"}),
    ("another size", {"found": True, "calls": 1, "shape": [2, 8]}, None, {"features-reshaped"}),
    ("other values", {"found": True, "calls": 1, "shape": [2, 4]}, FEATURES * 2, {"features-differ"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("features", "values", "reasons"),
    [c[1:] for c in FEATURE_CASES],
    ids=[c[0] for c in FEATURE_CASES],
)
def test_output_shape_feature_reasons(features, values, reasons):
    spec = {"input_shape": [2, 3, 8, 8], "features_at": "fc"}
    have = {"shape": [2, 10], "features": features}
    mine = {} if values is None else {"features": values}
    verdict = verdict_of(output_shape, spec, have, WANT, (mine, {"features": FEATURES}))
    assert verdict.reasons == reasons, verdict.message
    # With the output's shape wrong as well, both are named (the message names the shape).
    wrong = verdict_of(
        output_shape, spec, {**have, "shape": [2, 100]}, WANT, (mine, {"features": FEATURES})
    )
    assert wrong.reasons == reasons | {"too-many-outputs"}
    assert wrong.message.startswith("`model` gives an output of shape [2, 100]")


# --- frozen_backbone ------------------------------------------------------------------


def backbone(aspect: str, facts: dict, **extra) -> Verdict:
    params = {"aspect": aspect, "head": "classifier.1", **extra}
    return verdict_of(frozen_backbone, params, facts, reference())


NO_BIAS = with_(reference(), "head", head(("weight", [10, 4])))
BACKBONE = [
    ("head", "the head lacks its bias", NO_BIAS, {"head-shapes", "head-lacks-tensors", "head-no-bias"}),
    ("head", "the head lacks its weight", with_(reference(), "head", head(("bias", [10]))), {"head-shapes", "head-lacks-tensors"}),
    ("head", "another number of classes", with_(reference(), "head", head(("weight", [100, 4]), ("bias", [100]))), {"head-shapes"}),
    ("head", "the head the model came with", with_(reference(), "head", head(("weight", [1000, 4]), ("bias", [1000]), given=True, trainable=False)), {"head-not-replaced", "head-shapes"}),
    ("head", "an identity", with_(reference(), "head", {**head(cls="torch.nn.modules.linear.Identity"), "tensors": []}), {"head-no-parameters", "head-shapes"}),
    ("head", "no module at the head's path", with_(reference(), "head", None), {"head-missing"}),
    ("head", "the new head frozen", with_(reference(), "head", head(trainable=False)), {"head-frozen"}),
    (
        "head",
        "half the head frozen",
        with_(reference(), "head", {**head(), "tensors": [{"name": "weight", "shape": [10, 4], "requires_grad": False}, {"name": "bias", "shape": [10], "requires_grad": True}]}),
        {"head-partly-frozen"},
    ),
    ("frozen", "the backbone unfrozen", with_(reference(), "tensors/conv.weight", tensor("parameter", "a", [4, 3, 3, 3], True)), {"backbone-trainable"}),
    ("frozen", "another model", {**reference(), "tensors": {"w": tensor("parameter", "j", [3])}}, {"backbone-replaced"}),
    ("unchanged", "a layer re-initialised", with_(reference(), "tensors/conv.weight", tensor("parameter", "f", [4, 3, 3, 3])), {"weights-changed"}),
    ("unchanged", "statistics moved", with_(reference(), "tensors/bn.running_mean", tensor("buffer", "g", [4])), {"buffers-changed", "statistics-moved"}),
    (
        "unchanged",
        "random weights and statistics",
        with_(with_(reference(), "tensors/conv.weight", tensor("parameter", "f", [4, 3, 3, 3])), "tensors/bn.running_mean", tensor("buffer", "g", [4])),
        {"weights-changed", "buffers-changed"},
    ),
    ("unchanged", "cast to half", with_(reference(), "tensors/bn.weight", {**tensor("parameter", "b", [4]), "dtype": "float16"}), {"tensors-retyped"}),
    ("unchanged", "pooling swapped", with_(reference(), "layers/pool", {"class_name": "torch.nn.modules.pooling.AdaptiveMaxPool2d", "settings": {}}), {"layers-replaced"}),
    ("unchanged", "a stride changed", with_(reference(), "layers/conv", {"class_name": "torch.nn.modules.conv.Conv2d", "settings": {"stride": [1, 1], "padding_mode": "zeros"}}), {"settings-changed"}),
    (
        "unchanged",
        "an fc added beside the head",
        {**reference(), "layers": {**layers(), "fc": {"class_name": "torch.nn.modules.linear.Linear", "settings": {}}}, "tensors": {**tensors(), "fc.weight": tensor("parameter", "f", [5, 4], True)}},
        {"layers-added", "tensors-added"},
    ),
    (
        "unchanged",
        "a layer and a weight changed: both named, the layer in the message",
        with_(with_(reference(), "layers/pool", {"class_name": "torch.nn.modules.pooling.AdaptiveMaxPool2d", "settings": {}}), "tensors/conv.weight", tensor("parameter", "f", [4, 3, 3, 3])),
        {"layers-replaced", "weights-changed"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("aspect", "facts", "reasons"),
    [(c[0], c[2], c[3]) for c in BACKBONE],
    ids=[c[1] for c in BACKBONE],
)
def test_frozen_backbone_reasons(aspect, facts, reasons):
    verdict = backbone(aspect, facts)
    assert not verdict.passed
    assert verdict.reasons == reasons, verdict.message


def test_the_aspect_all_names_what_every_failed_aspect_found_and_the_first_message():
    facts = with_(
        with_(reference(), "tensors/conv.weight", tensor("parameter", "f", [4, 3, 3, 3], True)),
        "head",
        head(trainable=False),
    )
    verdict = backbone("all", facts)
    assert verdict.reasons == {"weights-changed", "backbone-trainable", "head-frozen"}
    assert verdict.message == backbone("unchanged", facts).message


def test_a_head_without_the_contained_classes():
    verdict = backbone("head", reference(), contains=["torch.nn.Dropout"])
    assert verdict.reasons == {"head-lacks-classes"}


# --- variable_type and python ---------------------------------------------------------


def test_variable_type_reasons():
    spec = {"variable": "model", "expected_type": "torchvision.models.resnet.ResNet"}
    assert verdict_of(variable_type, spec, {"exists": False}, None).reasons == {"missing"}
    other = {"exists": True, "lineage": ["torchvision.models.mobilenetv2.MobileNetV2"]}
    assert verdict_of(variable_type, spec, other, None).reasons == {"wrong-type"}


def test_python_reasons():
    spec = {"code": "assert model.fc.out_features == 10"}
    failed = {"passed": False, "message": "out_features is 1000"}
    assert verdict_of(python, spec, failed, None).reasons == {"assertion-failed"}
    raised = {"passed": False, "message": "AttributeError: fc", "raised": True}
    assert verdict_of(python, spec, raised, None).reasons == {"raised"}
