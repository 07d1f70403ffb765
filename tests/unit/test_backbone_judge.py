"""The judges of a replaced head, on hand-made facts: `frozen_backbone`'s aspects,
`architecture` and `output_shape`'s features. A head is right by what it does (takes the
backbone's features, gives the right shape, trains), not by its inner names; the backbone
is its layers, hyper-parameters, weights and buffers; each message names the mistake.

The observers that produce these facts are run at the end on small in-process models."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from pydantic import ValidationError

from graders.checks import architecture, frozen_backbone, output_shape
from graders.checks.base import Observed
from sandboxed import observe

DIGEST = {name: f"{i:064x}" for i, name in enumerate("abcdefghij")}
LINEAR = "torch.nn.modules.linear.Linear"
SEQUENTIAL = "torch.nn.modules.container.Sequential"
DROPOUT = "torch.nn.modules.dropout.Dropout"
AVGPOOL = "torch.nn.modules.pooling.AdaptiveAvgPool2d"


# --- frozen_backbone ---------------------------------------------------------------
# A small network as the facts describe it: conv -> bn -> pool -> classifier (dropout, head).


def layers() -> dict:
    return {
        "": {"class_name": "tests.Net (defined by your code)", "settings": {}},
        "conv": {
            "class_name": "torch.nn.modules.conv.Conv2d",
            "settings": {"stride": [2, 2], "padding_mode": "zeros"},
        },
        "bn": {"class_name": "torch.nn.modules.batchnorm.BatchNorm2d", "settings": {"eps": 1e-5}},
        "pool": {"class_name": AVGPOOL, "settings": {"output_size": [1, 1]}},
        "classifier": {"class_name": SEQUENTIAL, "settings": {}},
        "classifier.0": {"class_name": DROPOUT, "settings": {"p": 0.2, "inplace": False}},
    }


def tensor(kind: str, digest: str, shape: list[int], requires_grad: bool = False) -> dict:
    return {
        "kind": kind,
        "shape": shape,
        "dtype": "float32",
        "requires_grad": requires_grad,
        "digest": DIGEST[digest],
    }


def tensors() -> dict:
    return {
        "conv.weight": tensor("parameter", "a", [4, 3, 3, 3]),
        "bn.weight": tensor("parameter", "b", [4]),
        "bn.bias": tensor("parameter", "c", [4]),
        "bn.running_mean": tensor("buffer", "d", [4]),
        "bn.running_var": tensor("buffer", "e", [4]),
    }


def head(*shapes_and_names, cls=LINEAR, given=False, trainable=True, modules=None) -> dict:
    pairs = shapes_and_names or (("weight", [10, 4]), ("bias", [10]))
    return {
        "class_name": cls,
        "given": given,
        "modules": modules or [cls],
        "tensors": [
            {"name": name, "shape": shape, "requires_grad": trainable} for name, shape in pairs
        ],
    }


def reference() -> dict:
    return {"head": head(), "layers": layers(), "tensors": tensors()}


def with_(facts: dict, path: str, value) -> dict:
    """A copy of facts with one entry changed (None deletes it); path like 'layers/pool'."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in facts.items()}
    section, _, key = path.partition("/")
    if not key:
        out[section] = value
    elif value is None:
        del out[section][key]
    else:
        out[section][key] = value
    return out


def judge_backbone(aspect: str, facts: dict, **params) -> tuple[bool, str]:
    check = frozen_backbone.Params(
        name="backbone",
        type="frozen_backbone",
        aspect=aspect,
        head=params.pop("head_path", "classifier.1"),
        **params,
    )
    got = Observed(frozen_backbone.Facts.model_validate(facts))
    want = Observed(frozen_backbone.Facts.model_validate(reference()))
    verdict = frozen_backbone.judge(check, got, want)
    return verdict.passed, verdict.message


SEQUENTIAL_HEAD = head(("0.weight", [10, 4]), ("0.bias", [10]), cls=SEQUENTIAL)
SEQUENTIAL_HEAD["modules"] = [SEQUENTIAL, LINEAR]
DROPOUT_HEAD = head(("1.weight", [10, 4]), ("1.bias", [10]), cls=SEQUENTIAL)
DROPOUT_HEAD["modules"] = [SEQUENTIAL, DROPOUT, LINEAR]

CORRECT = {
    "the reference's head": reference(),
    "a Sequential holding the Linear": with_(reference(), "head", SEQUENTIAL_HEAD),
    "a dropout then the Linear": with_(reference(), "head", DROPOUT_HEAD),
    "bias registered before weight": with_(
        reference(), "head", head(("bias", [10]), ("weight", [10, 4]))
    ),
}


@pytest.mark.parametrize("aspect", ["all", "unchanged", "frozen", "head"])
@pytest.mark.parametrize("facts", CORRECT.values(), ids=CORRECT.keys())
def test_correct_heads_pass_every_aspect_whatever_their_inner_names(aspect, facts):
    passed, message = judge_backbone(aspect, facts)
    assert passed, message


WRONG = [
    # (name, aspect that fails, facts, fragment of its message, aspects that still pass)
    (
        "100 classes",
        "head",
        with_(reference(), "head", head(("weight", [100, 4]), ("bias", [100]))),
        "`model.classifier.1` holds tensors of shapes [100, 4], [100], expected [10, 4], [10]",
        {"unchanged", "frozen"},
    ),
    (
        "no bias",
        "head",
        with_(reference(), "head", head(("weight", [10, 4]))),
        "it has no bias (the reference's head has)",
        {"unchanged", "frozen"},
    ),
    (
        "head frozen",
        "head",
        with_(reference(), "head", head(trainable=False)),
        "the new head `model.classifier.1` is frozen (weight, bias: requires_grad is False)",
        {"unchanged", "frozen"},
    ),
    (
        "half the head frozen",
        "head",
        with_(
            reference(),
            "head",
            {
                **head(),
                "tensors": [
                    {"name": "weight", "shape": [10, 4], "requires_grad": False},
                    {"name": "bias", "shape": [10], "requires_grad": True},
                ],
            },
        ),
        "1 of the 2 tensors of the new head `model.classifier.1` are frozen (weight",
        {"unchanged", "frozen"},
    ),
    (
        "the head the model came with, untouched",
        "head",
        with_(
            reference(),
            "head",
            head(("weight", [1000, 4]), ("bias", [1000]), given=True, trainable=False),
        ),
        "`model.classifier.1` is still the layer the model came with (tensors of shapes "
        "[1000, 4], [1000]): assign a new layer with tensors of shapes [10, 4], [10]",
        {"unchanged", "frozen"},
    ),
    (
        "the head removed",
        "head",
        with_(reference(), "head", {**head(cls="torch.nn.modules.linear.Identity"), "tensors": []}),
        "`model.classifier.1` (a torch.nn.Identity) holds no parameters: expected a trainable "
        "layer with tensors of shapes [10, 4], [10]",
        {"unchanged", "frozen"},
    ),
    (
        "an MLP head",
        "head",
        with_(
            reference(),
            "head",
            head(("0.weight", [8, 4]), ("0.bias", [8]), ("2.weight", [10, 8]), ("2.bias", [10])),
        ),
        "holds tensors of shapes [8, 4], [8], [10, 8], [10], expected [10, 4], [10]",
        {"unchanged", "frozen"},
    ),
    (
        "backbone unfrozen",
        "frozen",
        with_(reference(), "tensors/conv.weight", tensor("parameter", "a", [4, 3, 3, 3], True)),
        "1 backbone tensor still trainable (conv.weight): the backbone must stay frozen",
        {"unchanged", "head"},
    ),
    (
        "pooling swapped",
        "unchanged",
        with_(
            reference(),
            "layers/pool",
            {"class_name": "torch.nn.modules.pooling.AdaptiveMaxPool2d", "settings": {}},
        ),
        "the backbone's layers changed: `model.pool` is a torch.nn.AdaptiveMaxPool2d, "
        "expected a torch.nn.AdaptiveAvgPool2d. Only `model.classifier.1` is to be replaced",
        {"frozen", "head"},
    ),
    (
        "a stride changed in place",
        "unchanged",
        with_(
            reference(),
            "layers/conv",
            {
                "class_name": "torch.nn.modules.conv.Conv2d",
                "settings": {"stride": [1, 1], "padding_mode": "zeros"},
            },
        ),
        "`model.conv` has stride=[1, 1], expected stride=[2, 2]",
        {"frozen", "head"},
    ),
    (
        "the dropout's rate changed",
        "unchanged",
        with_(
            reference(),
            "layers/classifier.0",
            {"class_name": DROPOUT, "settings": {"p": 0.5, "inplace": False}},
        ),
        "`model.classifier.0` has p=0.5, expected p=0.2",
        {"frozen", "head"},
    ),
    (
        "the dropout replaced by an identity",
        "unchanged",
        with_(
            reference(),
            "layers/classifier.0",
            {"class_name": "torch.nn.modules.linear.Identity", "settings": {}},
        ),
        "`model.classifier.0` is a torch.nn.Identity, expected a torch.nn.Dropout",
        {"frozen", "head"},
    ),
    (
        "a forward set on an instance",
        "unchanged",
        with_(
            reference(),
            "layers/pool",
            {"class_name": AVGPOOL, "settings": {"output_size": [1, 1], "forward": "<function>"}},
        ),
        "`model.pool` has an attribute `forward` = '<function>' that the reference's has not",
        {"frozen", "head"},
    ),
    (
        "a layer added (the ResNet habit on another model)",
        "unchanged",
        {
            **reference(),
            "layers": {**layers(), "fc": {"class_name": LINEAR, "settings": {}}},
            "tensors": {
                **tensors(),
                "fc.weight": tensor("parameter", "f", [5, 4], True),
                "fc.bias": tensor("parameter", "g", [5], True),
            },
        },
        "`model.fc` (a torch.nn.Linear) was added, which the model you were given does not have",
        {"frozen", "head"},
    ),
    (
        "a weight re-initialised",
        "unchanged",
        with_(reference(), "tensors/conv.weight", tensor("parameter", "f", [4, 3, 3, 3])),
        "1 backbone weight tensor differs from the pre-trained weights (conv.weight)",
        {"frozen", "head"},
    ),
    (
        "batch-norm statistics moved by a forward in training mode",
        "unchanged",
        with_(reference(), "tensors/bn.running_mean", tensor("buffer", "g", [4])),
        "1 backbone buffer differs from the pre-trained model's (bn.running_mean): "
        "the batch-norm statistics changed (a forward pass in training mode moves them",
        {"frozen", "head"},
    ),
    (
        "the backbone cast to another dtype",
        "unchanged",
        with_(
            reference(),
            "tensors/bn.weight",
            {**tensor("parameter", "b", [4]), "dtype": "float16"},
        ),
        "bn.weight is float16 [4], expected float32 [4]",
        {"frozen", "head"},
    ),
]


@pytest.mark.parametrize(
    ("aspect", "facts", "fragment", "passing"),
    [case[1:] for case in WRONG],
    ids=[case[0] for case in WRONG],
)
def test_each_mistake_fails_its_own_aspect_with_a_message_naming_it(
    aspect, facts, fragment, passing
):
    passed, message = judge_backbone(aspect, facts)
    assert not passed
    assert fragment in message, message
    for other in passing:
        still, other_message = judge_backbone(other, facts)
        assert still, (other, other_message)
    # The default aspect reports the same mistake.
    assert judge_backbone("all", facts) == (False, message)


def test_the_classifier_replaced_by_its_linear_loses_the_dropout_and_the_head_path():
    facts = {
        "head": None,
        "layers": {**layers(), "classifier": {"class_name": LINEAR, "settings": {}}},
        "tensors": {
            **tensors(),
            "classifier.weight": tensor("parameter", "f", [10, 4], True),
            "classifier.bias": tensor("parameter", "g", [10], True),
        },
    }
    del facts["layers"]["classifier.0"]
    passed, message = judge_backbone("unchanged", facts)
    assert not passed
    assert "`model.classifier` is a torch.nn.Linear, expected a torch.nn.Sequential" in message
    assert "`model.classifier.0` (a torch.nn.Dropout) was removed" in message
    passed, message = judge_backbone("head", facts)
    assert not passed
    assert message.startswith(
        "`model.classifier.1` does not exist (`model.classifier` is a torch.nn.Linear, "
        "expected a torch.nn.Sequential)"
    )
    # The new Linear's trainable tensors are not backbone tensors that were unfrozen.
    assert judge_backbone("frozen", facts)[0]


def test_a_wrapped_backbone_is_found_by_its_values():
    wrapped = {
        "head": None,
        "layers": {f"0.{p}" if p else "0": v for p, v in layers().items()},
        "tensors": {f"0.{n}": t for n, t in tensors().items()},
    }
    passed, message = judge_backbone("frozen", wrapped)
    assert passed, message
    wrapped["tensors"]["0.bn.bias"] = tensor("parameter", "c", [4], requires_grad=True)
    passed, message = judge_backbone("frozen", wrapped)
    assert not passed
    assert "1 backbone tensor still trainable (0.bn.bias)" in message
    assert not judge_backbone("unchanged", wrapped)[0]


def test_a_model_that_holds_none_of_the_backbone_was_replaced():
    other = {**reference(), "tensors": {"w": tensor("parameter", "j", [3])}}
    passed, message = judge_backbone("frozen", other)
    assert not passed
    assert "none of the backbone's 3 parameters is in `model` (e.g. conv.weight)" in message


def test_removed_layers_are_named_by_the_top_of_what_was_removed():
    facts = reference()
    facts["layers"] = {p: v for p, v in layers().items() if not p.startswith("classifier")} | {
        "classifier": {"class_name": SEQUENTIAL, "settings": {}}
    }
    many = {**layers(), **{f"classifier.0.{i}": layers()["conv"] for i in range(5)}}
    want = Observed(frozen_backbone.Facts.model_validate({**reference(), "layers": many}))
    got = Observed(frozen_backbone.Facts.model_validate(facts))
    check = frozen_backbone.Params(
        name="b", type="frozen_backbone", aspect="unchanged", head="classifier.1"
    )
    message = frozen_backbone.judge(check, got, want).message
    assert "`model.classifier.0` (a torch.nn.Dropout) was removed" in message
    assert "classifier.0.1" not in message


def test_the_head_can_be_required_to_contain_classes_in_order():
    facts = with_(reference(), "head", DROPOUT_HEAD)
    for contains in (["torch.nn.Dropout", "torch.nn.Linear"], [DROPOUT], []):
        assert judge_backbone("head", facts, contains=contains)[0], contains
    passed, message = judge_backbone("head", reference(), contains=["torch.nn.Dropout", LINEAR])
    assert not passed
    assert "should contain torch.nn.Dropout then torch.nn.modules.linear.Linear" in message
    assert "it holds torch.nn.Linear" in message
    reversed_head = {**DROPOUT_HEAD, "modules": [SEQUENTIAL, LINEAR, DROPOUT]}
    facts = with_(reference(), "head", reversed_head)
    assert not judge_backbone("head", facts, contains=["torch.nn.Dropout", "torch.nn.Linear"])[0]


def test_the_facts_are_a_closed_schema():
    with pytest.raises(ValidationError):
        frozen_backbone.Facts.model_validate({**reference(), "extra": 1})
    bad = with_(reference(), "tensors/conv.weight", {**tensors()["conv.weight"], "digest": "x"})
    with pytest.raises(ValidationError):
        frozen_backbone.Facts.model_validate(bad)
    old_style = {"backbone": {}, "head": {}}
    with pytest.raises(ValidationError):
        frozen_backbone.Facts.model_validate(old_style)


def test_specs_without_an_aspect_judge_all_three():
    check = frozen_backbone.Params.model_validate(
        {"name": "b", "type": "frozen_backbone", "head": "fc"}
    )
    assert check.aspect == "all" and check.contains == []


# --- architecture ------------------------------------------------------------------


def arch(**changes) -> dict:
    base = {
        "class_name": "torchvision.models.resnet.ResNet",
        "modules": {"conv1": "torch.nn.modules.conv.Conv2d", "fc": LINEAR},
        "settings": {"": {"groups": 1}, "conv1": {"stride": [2, 2]}, "fc": {"out_features": 10}},
        "parameters": {"conv1.weight": [64, 3, 7, 7], "fc.weight": [10, 512], "fc.bias": [10]},
    }
    return base | changes


ARCHITECTURE = [
    ("the same model", "", arch(), arch(), True, "with the expected 2 layers"),
    (
        "absent in both",
        "fc",
        {"exists": False},
        {"exists": False},
        True,
        "does not exist, as expected",
    ),
    (
        "an fc the model does not have",
        "fc",
        {"exists": False},
        {"exists": True, "class_name": LINEAR},
        False,
        "`model.fc` exists (a torch.nn.Linear), a module the expected model does not have",
    ),
    (
        "a module that is gone",
        "classifier.0",
        {"exists": True, "class_name": DROPOUT},
        {"exists": False},
        False,
        "`model.classifier.0` does not exist; expected a torch.nn.Dropout there",
    ),
    (
        "a layer added",
        "",
        arch(),
        arch(modules={**arch()["modules"], "extra": LINEAR}),
        False,
        "unexpected layers extra",
    ),
    (
        "a hyper-parameter changed",
        "",
        arch(),
        arch(settings={**arch()["settings"], "conv1": {"stride": [1, 1]}}),
        False,
        "`model.conv1` has stride=[1, 1], expected stride=[2, 2]",
    ),
    (
        "another head size",
        "",
        arch(),
        arch(parameters={**arch()["parameters"], "fc.weight": [100, 512]}),
        False,
        "fc.weight has shape [100, 512], expected [10, 512]",
    ),
    (
        "another model class",
        "",
        arch(),
        arch(class_name="torchvision.models.mobilenetv2.MobileNetV2"),
        False,
        "is a torchvision.models.mobilenetv2.MobileNetV2, expected a torchvision.models.resnet.ResNet",
    ),
]


@pytest.mark.parametrize(
    ("module", "want", "have", "passed", "fragment"),
    [case[1:] for case in ARCHITECTURE],
    ids=[case[0] for case in ARCHITECTURE],
)
def test_architecture_judge(module, want, have, passed, fragment):
    check = architecture.Params(name="a", type="architecture", module=module)
    verdict = architecture.judge(
        check,
        Observed(architecture.Facts.model_validate(have)),
        Observed(architecture.Facts.model_validate(want)),
    )
    assert verdict.passed is passed
    assert fragment in verdict.message, verdict.message


def test_a_setting_of_another_type_is_another_setting():
    assert architecture.setting_change({"inplace": 1}, {"inplace": True}) is not None
    assert architecture.setting_change({"p": 0.2}, {"p": 0.2}) is None


# --- output_shape with features_at -------------------------------------------------

FEATURES = np.linspace(0.0, 3.0, 8, dtype=np.float32).reshape(2, 4)


def judge_output(facts: dict, tensors: dict | None = None, **params) -> tuple[bool, str]:
    check = output_shape.Params(
        name="o", type="output_shape", input_shape=[2, 3, 8, 8], features_at="fc", **params
    )
    want = {"shape": [2, 10], "features": {"found": True, "calls": 1, "shape": [2, 4]}}
    verdict = output_shape.judge(
        check,
        Observed(output_shape.Facts.model_validate(facts), tensors or {}),
        Observed(output_shape.Facts.model_validate(want), {"features": FEATURES}),
    )
    return verdict.passed, verdict.message


def features(**changes) -> dict:
    return {"shape": [2, 10], "features": {"found": True, "calls": 1, "shape": [2, 4]} | changes}


OUTPUTS = [
    (
        "the reference's features",
        features(),
        FEATURES,
        True,
        "`model.fc` receives the reference's features",
    ),
    (
        "within the tolerance",
        features(),
        FEATURES + 1e-6,
        True,
        "receives the reference's features",
    ),
    (
        "a swapped pooling layer",
        features(),
        FEATURES * 0.5,
        False,
        "the features reaching `model.fc` differ from the reference's (largest difference 1.5)",
    ),
    (
        "features of another size",
        features(shape=[2, 8]),
        np.zeros((2, 8), np.float32),
        False,
        "the features reaching `model.fc` have shape [2, 8], expected [2, 4]",
    ),
    (
        "a head the forward never calls",
        features(calls=0, shape=None),
        None,
        False,
        "the model's forward never calls `model.fc`",
    ),
    (
        "no head at that path",
        {"shape": [2, 10], "features": {"found": False}},
        None,
        False,
        "`model.fc` does not exist, so no features reach it",
    ),
    (
        "something else than a tensor reaches it",
        features(shape=None),
        None,
        False,
        "is not a tensor",
    ),
    (
        "the wrong output shape comes first",
        {"shape": [2, 100], "features": {"found": True, "calls": 1, "shape": [2, 4]}},
        FEATURES * 0.5,
        False,
        "`model` gives an output of shape [2, 100] on an input of shape [2, 3, 8, 8], expected [2, 10]",
    ),
    (
        "the forward raised",
        {"error": "`model` raised RuntimeError on an input of shape [2, 3, 8, 8]: mat1 and mat2"},
        None,
        False,
        "raised RuntimeError",
    ),
]


@pytest.mark.parametrize(
    ("facts", "values", "passed", "fragment"),
    [case[1:] for case in OUTPUTS],
    ids=[case[0] for case in OUTPUTS],
)
def test_output_shape_judge_with_features(facts, values, passed, fragment):
    tensors = {} if values is None else {"features": values}
    ok, message = judge_output(facts, tensors)
    assert ok is passed
    assert fragment in message, message


def test_output_shape_without_features_at_ignores_them():
    check = output_shape.Params(name="o", type="output_shape", input_shape=[2, 4])
    verdict = output_shape.judge(
        check,
        Observed(output_shape.Facts.model_validate({"shape": [2, 10]})),
        Observed(output_shape.Facts.model_validate({"shape": [2, 10]})),
    )
    assert verdict.passed and "features" not in verdict.message


# --- the observers, on small in-process models ---------------------------------------


@pytest.fixture(scope="module")
def torch_env():
    import torch  # a dependency of the project: its absence is a failure, not a skip

    from sandboxed import introspect

    yield torch, introspect
    gc.enable()  # a call into the answer's code leaves the collector off, for the sandbox


def context(introspect, scope: dict, shared: dict | None = None):
    from sandboxed.harness import ObserveContext

    return ObserveContext(scope, 0, introspect, {} if shared is None else shared)


def small_model(torch):
    nn = torch.nn
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, stride=2))
    model.add_module("bn", nn.BatchNorm2d(4))
    model.add_module("pool", nn.AdaptiveAvgPool2d((1, 1)))
    model.add_module("flat", nn.Flatten())
    model.add_module("classifier", nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 1000)))
    return model.requires_grad_(False)


def test_frozen_backbone_observes_a_sequential_head_by_shape_and_the_setup_head(torch_env):
    torch, ti = torch_env
    model = small_model(torch)
    shared: dict = {}
    params = frozen_backbone.Params(name="b", type="frozen_backbone", head="classifier.1")
    observe.frozen_backbone.prepare(context(ti, {"model": model}, shared), params)
    model.classifier[1] = torch.nn.Sequential(torch.nn.Linear(4, 10))
    facts = frozen_backbone.Facts.model_validate(
        observe.frozen_backbone.observe(context(ti, {"model": model}, shared), params)
    )
    assert facts.head is not None and not facts.head.given
    assert [(t.name, t.shape, t.requires_grad) for t in facts.head.tensors] == [
        ("0.weight", [10, 4], True),
        ("0.bias", [10], True),
    ]
    assert facts.head.modules == [SEQUENTIAL, LINEAR]
    assert facts.layers["classifier.0"].settings == {"p": 0.2}  # not `inplace`: no setting
    assert facts.layers["conv"].settings["stride"] == [2, 2]
    assert facts.layers["pool"].settings == {"output_size": [1, 1]}
    assert facts.tensors["bn.running_mean"].kind == "buffer"
    assert facts.tensors["conv.weight"].kind == "parameter"
    assert not any(name.startswith("classifier.1") for name in facts.tensors)
    untouched = small_model(torch)
    shared = {}
    observe.frozen_backbone.prepare(context(ti, {"model": untouched}, shared), params)
    facts = observe.frozen_backbone.observe(context(ti, {"model": untouched}, shared), params)
    assert facts["head"]["given"] is True


def test_a_forward_set_on_an_instance_is_a_setting_that_changed(torch_env):
    torch, ti = torch_env
    model = small_model(torch)
    model.pool.forward = lambda x: x.amax((2, 3), keepdim=True)
    settings = observe.architecture.settings_of(ti, model.pool, "`model.pool`")
    assert settings["forward"].startswith("<function")
    assert (
        observe.architecture.find_module(ti, model, "classifier.1", "model") is model.classifier[1]
    )
    assert observe.architecture.find_module(ti, model, "fc", "model") is None
    assert observe.architecture.find_module(ti, model, "classifier.7", "model") is None


def test_output_shape_reads_the_features_reaching_the_head_and_puts_it_back(torch_env):
    torch, ti = torch_env
    model = small_model(torch)
    head = model.classifier[1]
    ctx = context(ti, {"model": model})
    params = output_shape.Params(
        name="o", type="output_shape", input_shape=[2, 3, 8, 8], features_at="classifier.1"
    )
    facts = observe.output_shape.observe(ctx, params)
    assert facts == {"shape": [2, 1000], "features": {"found": True, "calls": 1, "shape": [2, 4]}}
    assert model.classifier[1] is head and model.training  # the flags are put back
    model.eval()
    with torch.no_grad():
        expected = model[:4](ti.seeded_input([2, 3, 8, 8], 0))
    np.testing.assert_allclose(ctx.tensors["features"], expected.numpy(), rtol=1e-6)
    gone = output_shape.Params(
        name="o", type="output_shape", input_shape=[2, 3, 8, 8], features_at="fc"
    )
    assert observe.output_shape.observe(context(ti, {"model": model}), gone)["features"] == {
        "found": False
    }
