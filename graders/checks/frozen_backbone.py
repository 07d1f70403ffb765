"""`frozen_backbone`: the head (a module path) was replaced by a trainable layer; the backbone,
everything outside the head, is the reference's and frozen.

One `aspect` per check (`all`, the default, judges the three in this order):

- `unchanged`: the backbone's layers (paths, classes known by identity, hyper-parameters)
  and its tensors (parameters and persistent buffers such as batch-norm statistics, by
  value) equal the reference's: a swapped pooling layer, a removed dropout, an added layer,
  a re-initialised weight or a forward pass in training mode all change it;
- `frozen`: no parameter of the reference's backbone requires gradients;
- `head`: a module is at the head's path, holds tensors of the reference head's shapes
  (whatever their names or nesting: `Sequential(Dropout(), Linear())` is a head like
  `Linear()`), every one trainable, and contains the classes `contains` names.

These facts are weights and structure, read without running the answer's code; the
features the backbone gives the head are compared by `output_shape`'s `features_at`.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from graders.checks.architecture import Setting, find_module, setting_change, settings_of
from graders.checks.architecture import short_name as short
from graders.checks.base import (
    MAX_NAMES,
    MODULE_PATH_PATTERN,
    VARIABLE_PATTERN,
    CheckBase,
    FactsBase,
    ObservationError,
    Observed,
    Verdict,
    plural,
    preview,
)

TYPE = "frozen_backbone"
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class Params(CheckBase):
    type: Literal["frozen_backbone"]
    aspect: Literal["all", "unchanged", "frozen", "head"] = "all"
    variable: str = Field("model", pattern=VARIABLE_PATTERN)
    head: str = Field(
        min_length=1,
        pattern=MODULE_PATH_PATTERN,
        description="Path of the head, e.g. fc or classifier.1.",
    )
    contains: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Classes the head must contain, in this order, e.g. torch.nn.Dropout.",
    )


class Layer(FactsBase):
    class_name: str = Field(max_length=300)
    settings: dict[str, Setting] = Field(max_length=64)


class BackboneTensor(FactsBase):
    kind: Literal["parameter", "buffer"]
    shape: list[int] = Field(max_length=16)
    dtype: str = Field(max_length=32)
    requires_grad: bool
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class HeadTensor(FactsBase):
    name: str = Field(max_length=1100, description="Relative to the head; for messages only.")
    shape: list[int] = Field(max_length=16)
    requires_grad: bool


class Head(FactsBase):
    class_name: str = Field(max_length=300)
    given: bool = Field(description="Still the module the model had there before the answer.")
    modules: list[str] = Field(max_length=MAX_NAMES, description="Classes in it, itself first.")
    tensors: list[HeadTensor] = Field(max_length=MAX_NAMES)


class Facts(FactsBase):
    head: Head | None = Field(description="None: no module at the head's path.")
    layers: dict[str, Layer] = Field(max_length=MAX_NAMES, description="Outside the head.")
    tensors: dict[str, BackboneTensor] = Field(max_length=MAX_NAMES, description="Outside it.")


def _key(params: Params, what: str) -> tuple:
    return (TYPE, what, params.variable, params.head)


def prepare(ctx, params: Params) -> None:
    """Remember the setup's head (trusted, before the answer), to tell a new head from it."""
    ti = ctx.ti
    if _key(params, "given") not in ctx.shared:
        try:
            model = ti.lookup(ctx.scope, params.variable)
            given = find_module(ti, model, params.head, params.variable)
        except ObservationError:
            given = None
        ctx.shared[_key(params, "given")] = given


def observe(ctx, params: Params) -> dict:
    """The facts, read once for every aspect of the same model and head."""
    if _key(params, "facts") not in ctx.shared:
        ctx.shared[_key(params, "facts")] = _observe(ctx, params)
    return ctx.shared[_key(params, "facts")]


def _observe(ctx, params: Params) -> dict:
    ti = ctx.ti
    model = ti.require_module(ti.lookup(ctx.scope, params.variable), params.variable)
    head = find_module(ti, model, params.head, params.variable)
    inside = params.head + "."
    layers = {}
    for path, module in ti.named_modules(model):
        if path != params.head and not path.startswith(inside):
            what = f"`{params.variable}.{path}`" if path else f"`{params.variable}`"
            layers[path] = {
                "class_name": ti.class_name(module),
                "settings": settings_of(ti, module, what),
            }
    parameters = {name for name, _ in ti.named_parameters(model)}
    tensors = {}
    for name, t in ti.named_state(model):
        if not name.startswith(inside):
            tensors[name] = {
                "kind": "parameter" if name in parameters else "buffer",
                "shape": ti.shape_of(t),
                "dtype": ti.dtype_name(t),
                "requires_grad": ti.requires_grad(t),
                "digest": ti.digest(ti.to_numpy(t)),
            }
    facts: dict = {"head": None, "layers": layers, "tensors": tensors}
    if head is not None:
        given = ctx.shared.get(_key(params, "given"))
        facts["head"] = {
            "class_name": ti.class_name(head),
            "given": given is not None and ti.same_object(given, head),
            "modules": [ti.class_name(m) for _, m in ti.named_modules(head)],
            "tensors": [
                {"name": n, "shape": ti.shape_of(p), "requires_grad": ti.requires_grad(p)}
                for n, p in ti.named_parameters(head)
            ],
        }
    return facts


def _at(params: Params, path: str) -> str:
    return f"`{params.variable}.{path}`" if path else f"`{params.variable}`"


def _roots(paths: set[str]) -> list[str]:
    """The paths whose parent is not among them: the top of each added or removed subtree."""
    return sorted(p for p in paths if p and p.rpartition(".")[0] not in paths)


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _judge_layers(params: Params, have: Facts, want: Facts) -> list[str]:
    problems = []
    common = sorted(set(want.layers) & set(have.layers))
    for p in [p for p in common if have.layers[p].class_name != want.layers[p].class_name][:2]:
        problems.append(
            f"{_at(params, p)} is a {short(have.layers[p].class_name)}, "
            f"expected a {short(want.layers[p].class_name)}"
        )
    removed = _roots(set(want.layers) - set(have.layers))
    if removed:
        gone = [f"{_at(params, p)} (a {short(want.layers[p].class_name)})" for p in removed]
        problems.append(f"{_names(gone)} {'was' if len(gone) == 1 else 'were'} removed")
    added = _roots(set(have.layers) - set(want.layers))
    if added:
        new = [f"{_at(params, p)} (a {short(have.layers[p].class_name)})" for p in added]
        problems.append(
            f"{_names(new)} {'was' if len(new) == 1 else 'were'} added, "
            "which the model you were given does not have"
        )
    for p in common:
        mine, theirs = have.layers[p], want.layers[p]
        change = mine.class_name == theirs.class_name and setting_change(
            mine.settings, theirs.settings
        )
        if change:
            problems.append(f"{_at(params, p)} {change}")
            break
    return problems


def _differ(names: list[str]) -> str:
    return "differs" if len(names) == 1 else "differ"


def _judge_unchanged(params: Params, have: Facts, want: Facts) -> Verdict:
    head = _at(params, params.head)
    problems = _judge_layers(params, have, want)
    if problems:
        return Verdict(
            False,
            f"the backbone's layers changed: {'; '.join(problems)}. Only {head} is to be replaced",
        )
    missing = set(want.tensors) - set(have.tensors)
    extra = set(have.tensors) - set(want.tensors)
    if missing or extra:
        parts = [f"missing {preview(missing)}"] if missing else []
        parts += [f"unexpected {preview(extra)}"] if extra else []
        return Verdict(False, f"the backbone's tensors changed: {'; '.join(parts)}")
    retyped = [
        n
        for n in want.tensors
        if (have.tensors[n].shape, have.tensors[n].dtype)
        != (want.tensors[n].shape, want.tensors[n].dtype)
    ]
    if retyped:
        n, mine, theirs = retyped[0], have.tensors[retyped[0]], want.tensors[retyped[0]]
        return Verdict(
            False,
            f"{plural(len(retyped), 'backbone tensor')} changed shape or dtype, e.g. {n} is "
            f"{mine.dtype} {mine.shape}, expected {theirs.dtype} {theirs.shape}",
        )
    altered = [n for n in want.tensors if have.tensors[n].digest != want.tensors[n].digest]
    weights = [n for n in altered if want.tensors[n].kind == "parameter"]
    buffers = [n for n in altered if want.tensors[n].kind == "buffer"]
    problems = []
    if weights:
        problems.append(
            f"{plural(len(weights), 'backbone weight tensor')} {_differ(weights)} from the "
            f"pre-trained weights ({preview(weights)})"
        )
    if buffers:
        text = (
            f"{plural(len(buffers), 'backbone buffer')} {_differ(buffers)} from the pre-trained "
            f"model's ({preview(buffers)})"
        )
        if all(n.rpartition(".")[2] in STATISTICS for n in buffers):
            text += ": running the model in training mode updates its batch-norm statistics"
        problems.append(text)
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(
        True,
        f"the backbone is unchanged ({plural(len(want.layers), 'layer')}, "
        f"{plural(len(want.tensors), 'tensor')})",
    )


def _judge_frozen(params: Params, have: Facts, want: Facts) -> Verdict:
    """Each of the reference backbone's parameters is found by its name, or else by its
    values (a wrapped model holds the same tensors under other names)."""
    backbone = [n for n, t in want.tensors.items() if t.kind == "parameter"]
    by_value: dict[tuple, list[str]] = {}
    for name, t in have.tensors.items():
        if t.kind == "parameter" and name not in want.tensors:
            by_value.setdefault((t.digest, tuple(t.shape)), []).append(name)
    found: dict[str, str] = {}
    for name in backbone:
        same = by_value.get((want.tensors[name].digest, tuple(want.tensors[name].shape)))
        if name in have.tensors:
            found[name] = name
        elif same:
            found[name] = same.pop(0)
    if backbone and not found:
        return Verdict(
            False,
            f"none of the backbone's {plural(len(backbone), 'parameter')} is in `{params.variable}`"
            f" (e.g. {backbone[0]}): the model was replaced",
        )
    trainable = [found[n] for n in backbone if n in found and have.tensors[found[n]].requires_grad]
    if trainable:
        return Verdict(
            False,
            f"{plural(len(trainable), 'backbone tensor')} still trainable "
            f"({preview(trainable)}): the backbone must stay frozen",
        )
    return Verdict(True, f"the backbone is frozen ({plural(len(found), 'parameter')})")


def _shapes(shapes: list[list[int]]) -> str:
    return ", ".join(str(s) for s in shapes) if shapes else "none"


def _contains_in_order(wanted: list[str], classes: list[str]) -> bool:
    found = iter(classes)
    return all(any(w in (c, short(c)) for c in found) for w in wanted)


def _judge_head(params: Params, have: Facts, want: Facts) -> Verdict:
    head = _at(params, params.head)
    assert want.head is not None, "the reference's model has no head at this path"
    if have.head is None:
        parent = params.head
        while parent and parent not in have.layers:
            parent = parent.rpartition(".")[0]
        context = ""
        if parent and parent in want.layers:
            mine, theirs = have.layers[parent].class_name, want.layers[parent].class_name
            context = f" ({_at(params, parent)} is a {short(mine)}" + (
                f", expected a {short(theirs)})" if mine != theirs else ")"
            )
        return Verdict(False, f"{head} does not exist{context}: replace the layer at that path")
    mine = [t.shape for t in have.head.tensors]
    theirs = [t.shape for t in want.head.tensors]
    if sorted(mine) != sorted(theirs):
        if have.head.given and not want.head.given:
            return Verdict(
                False,
                f"{head} is still the layer the model came with (tensors of shapes "
                f"{_shapes(mine)}): assign a new layer with tensors of shapes {_shapes(theirs)}",
            )
        if not mine:
            return Verdict(
                False,
                f"{head} (a {short(have.head.class_name)}) holds no parameters: expected a "
                f"trainable layer with tensors of shapes {_shapes(theirs)}",
            )
        text = f"{head} holds tensors of shapes {_shapes(mine)}, expected {_shapes(theirs)}"
        lacking = Counter(map(tuple, theirs)) - Counter(map(tuple, mine))
        if not Counter(map(tuple, mine)) - Counter(map(tuple, theirs)) and lacking:
            names = [t.name for t in want.head.tensors if tuple(t.shape) in lacking]
            text += f": it has no {_names(names)} (the reference's head has)"
        return Verdict(False, text)
    if not _contains_in_order(params.contains, have.head.modules):
        return Verdict(
            False,
            f"{head} should contain {' then '.join(params.contains)}; it holds "
            f"{', '.join(short(c) for c in have.head.modules)}",
        )
    frozen = [t.name for t in have.head.tensors if not t.requires_grad]
    if frozen:
        total = len(have.head.tensors)
        what = (
            f"the new head {head} is frozen"
            if len(frozen) == total
            else f"{len(frozen)} of the {total} tensors of the new head {head} are frozen"
        )
        return Verdict(
            False,
            f"{what} ({preview(frozen)}: requires_grad is False): its parameters must be trainable",
        )
    return Verdict(
        True,
        f"{head} is a new, trainable {short(have.head.class_name)} (tensors of shapes {_shapes(mine)})",
    )


def judge(params: Params, got: Observed, expected: Observed | None) -> Verdict:
    assert expected is not None
    have, want = got.facts, expected.facts
    if params.aspect == "unchanged":
        return _judge_unchanged(params, have, want)
    if params.aspect == "frozen":
        return _judge_frozen(params, have, want)
    if params.aspect == "head":
        return _judge_head(params, have, want)
    verdicts = [
        _judge_unchanged(params, have, want),
        _judge_frozen(params, have, want),
        _judge_head(params, have, want),
    ]
    failed = next((v for v in verdicts if not v.passed), None)
    return failed or Verdict(True, "; ".join(v.message for v in verdicts))
