"""Grader specs: what an instructor posts. Pydantic models, torch-free, `extra="forbid"`.

A spec is either a `code` task (graded by behaviour in the sandbox) or a `choice` task
(graded by key). `parse_spec` turns YAML or JSON text into a model, or raises
`SpecError` naming the offending field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from contract.checks import CheckSpec
from graders.checks import REGISTRY, reasons_of
from graders.errors import SpecError
from graders.result import Outcome

SPEC_SCHEMA_VERSION = 1
TASK_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,63}$"
BLANK_PATTERN = re.compile(r"\[(\d{1,2})\]")
MAX_CODE_CHARS = 64 * 1024
GIB = 1024**3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    time_limit_s: float = Field(
        60.0, gt=0, le=600, description="Wall-clock limit for one run, seconds."
    )
    memory_bytes: int = Field(
        3 * GIB,
        ge=256 * 1024**2,
        le=64 * GIB,
        description="Memory (and memory+swap) of the sandbox.",
    )
    max_output_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=8 * 1024**2,
        description="Student stdout and stderr kept, each, bytes.",
    )
    cpus: float = Field(1.0, gt=0, le=64, description="CPU quota of the sandbox, in cores.")
    gpu: Literal["none", "optional", "required"] = Field(
        "none",
        description="`optional`: use a GPU when the worker has one, else run on the CPU and say so; "
        "`required`: refuse to grade on a worker without one.",
    )

    def beyond(self, bounds: LimitBounds) -> list[tuple[str, str]]:
        """What these limits ask beyond a deployment's bounds: (field path, message) each."""
        asked = [
            ("time_limit_s", self.time_limit_s, bounds.time_limit_s, "s"),
            ("memory_bytes", self.memory_bytes, bounds.memory_bytes, "bytes"),
            ("max_output_bytes", self.max_output_bytes, bounds.max_output_bytes, "bytes"),
            ("cpus", self.cpus, bounds.cpus, "cores"),
        ]
        problems = [
            (
                f"limits.{name}",
                f"{_amount(value)} {unit} asked; this deployment allows at most "
                f"{_amount(bound)} {unit}",
            )
            for name, value, bound, unit in asked
            if value > bound
        ]
        if self.gpu == "required" and not bounds.gpu:
            problems.append(
                ("limits.gpu", "required, but this deployment offers no GPU (use optional or none)")
            )
        return problems


def _amount(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class LimitBounds:
    """The most one task's sandbox may ask of a deployment: limits above them could never run
    there (the engine would refuse the sandbox)."""

    time_limit_s: float
    memory_bytes: int
    max_output_bytes: int
    cpus: float
    gpu: bool  # False: no worker offers a GPU


class Blank(_Strict):
    id: int = Field(ge=1, le=99, description="The number written as [id] in the template.")
    options: dict[str, str] = Field(
        min_length=1,
        description="Option letter to the code it puts in the blank, e.g. {A: 'True'}.",
    )


class Template(_Strict):
    code: str = Field(
        max_length=MAX_CODE_CHARS, description="Code with numbered blanks [1], [2], ..."
    )
    blanks: list[Blank] = Field(min_length=1)

    @model_validator(mode="after")
    def _blanks_match(self) -> Template:
        written = {int(n) for n in BLANK_PATTERN.findall(self.code)}
        declared = [b.id for b in self.blanks]
        if len(set(declared)) != len(declared):
            raise ValueError("blank ids must be unique")
        if written != set(declared):
            raise ValueError(
                f"the template writes blanks {sorted(written)} but declares {sorted(declared)}"
            )
        return self


class MistakeTrigger(_Strict):
    """All given conditions must hold for the mistake to be reported."""

    outcomes: list[Outcome] = Field(default_factory=list, description="Any of these outcomes.")
    failed_checks: list[str] = Field(
        default_factory=list, description="Any of these checks (by name) failed."
    )
    reasons: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Any of these findings of a failed check, as `check-name:reason` "
        "(the reasons each check type can find are listed by `gradectl schema --reasons`): "
        "a mistake named by what the answer did, not only by which check failed.",
    )
    error_matches: str | None = Field(
        None,
        max_length=500,
        description="Regex searched in the student's exception `Type: message`.",
    )

    @model_validator(mode="after")
    def _something(self) -> MistakeTrigger:
        if not (self.outcomes or self.failed_checks or self.reasons or self.error_matches):
            raise ValueError(
                "a trigger needs at least one of outcomes, failed_checks, reasons, error_matches"
            )
        for i, item in enumerate(self.reasons):
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}:[a-z0-9][a-z0-9-]{0,63}", item):
                raise ValueError(f"reasons[{i}]: {item[:100]!r} is not `check-name:reason`")
        if self.error_matches is not None:
            try:
                re.compile(self.error_matches)
            except re.error as exc:
                raise ValueError(f"error_matches is not a valid regex: {exc}") from None
        return self


class Mistake(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    message: str = Field(min_length=1, max_length=2000, description="Feedback naming the mistake.")
    when: MistakeTrigger


class KnownWrong(_Strict):
    """An answer the self-test must not give full marks, optionally naming the mistake it shows."""

    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(None, max_length=MAX_CODE_CHARS)
    blanks: dict[int, str] | None = Field(None, description="Blank id to option letter or code.")
    expect_mistake: str | list[str] | None = Field(
        None,
        description="Id (or ids) of the mistakes the result must report; when given, the "
        "result may report no other mistake.",
    )

    @property
    def intended(self) -> tuple[str, ...]:
        """The ids of the mistakes this answer makes (empty: not said)."""
        if self.expect_mistake is None:
            return ()
        if isinstance(self.expect_mistake, str):
            return (self.expect_mistake,)
        return tuple(self.expect_mistake)

    @model_validator(mode="after")
    def _one_answer(self) -> KnownWrong:
        if (self.code is None) == (self.blanks is None):
            raise ValueError("give exactly one of code or blanks")
        return self


class _TaskBase(_Strict):
    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    id: str = Field(pattern=TASK_ID_PATTERN, description="Stable task id, e.g. finetune-freeze.")
    title: str = Field(min_length=1, max_length=200)
    difficulty: Literal["easy", "medium", "hard"]
    prompt: str = Field(min_length=1, max_length=20_000)
    max_attempts: int | None = Field(
        3, ge=1, le=1000, description="Per student; null for unlimited."
    )
    hint: str = Field("", max_length=5000)
    tags: list[str] = Field(default_factory=list, max_length=20)


class CodeTask(_TaskBase):
    kind: Literal["code"] = "code"
    template: Template | None = Field(None, description="Optional fill-in-the-blanks form.")
    setup: str = Field(
        "", max_length=MAX_CODE_CHARS, description="Trusted code run before the student's code."
    )
    reference: str = Field(
        min_length=1, max_length=MAX_CODE_CHARS, description="Reference solution; never shown."
    )
    checks: list[CheckSpec] = Field(min_length=1, max_length=50)
    mistakes: list[Mistake] = Field(default_factory=list, max_length=50)
    known_wrong: list[KnownWrong] = Field(default_factory=list, max_length=50)
    limits: Limits = Field(default_factory=Limits)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds torch, numpy and observer inputs.")

    @model_validator(mode="after")
    def _consistent(self) -> CodeTask:
        names = [c.name for c in self.checks]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"checks[{i}].name: {name!r} is already the name of another check")
        mistake_ids = {m.id for m in self.mistakes}
        types = {c.name: c.type for c in self.checks}
        for i, m in enumerate(self.mistakes):
            unknown = set(m.when.failed_checks) - set(names)
            if unknown:
                raise ValueError(
                    f"mistakes[{i}].when.failed_checks: mistake {m.id!r} names unknown checks {sorted(unknown)}"
                )
            for item in m.when.reasons:
                check, reason = item.split(":")
                if check not in types:
                    raise ValueError(
                        f"mistakes[{i}].when.reasons: mistake {m.id!r} names unknown check {check!r}"
                    )
                known = reasons_of(types[check])
                if reason not in known:
                    raise ValueError(
                        f"mistakes[{i}].when.reasons: a {types[check]} check finds no reason "
                        f"{reason!r}; it finds {', '.join(sorted(known))}"
                    )
        for i, kw in enumerate(self.known_wrong):
            for intended in kw.intended:
                if intended not in mistake_ids:
                    raise ValueError(
                        f"known_wrong[{i}].expect_mistake: {kw.name!r} expects unknown mistake {intended!r}"
                    )
            if kw.blanks is not None and self.template is None:
                raise ValueError(
                    f"known_wrong[{i}].blanks: {kw.name!r} fills blanks but the task has no template"
                )
        return self

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.checks))


class ChoiceTask(_TaskBase):
    kind: Literal["choice"]
    options: dict[str, str] = Field(min_length=2, description="Option letter to its text.")
    answer: str = Field(description="The letter of the correct option.")
    explanation: str = Field("", max_length=20_000, description="Shown with every result.")
    option_feedback: dict[str, str] = Field(
        default_factory=dict, description="Feedback for a wrong option, by letter."
    )
    points: float = Field(1.0, gt=0, le=1000)

    @model_validator(mode="after")
    def _answer_is_an_option(self) -> ChoiceTask:
        if self.answer not in self.options:
            raise ValueError(
                f"answer {self.answer!r} is not one of the options {sorted(self.options)}"
            )
        unknown = set(self.option_feedback) - set(self.options)
        if unknown:
            raise ValueError(f"option_feedback names unknown options {sorted(unknown)}")
        return self

    @property
    def max_score(self) -> float:
        return self.points


TaskSpec = Annotated[CodeTask | ChoiceTask, Field(discriminator="kind")]


class _SpecDocument(BaseModel):
    spec: TaskSpec


def _field_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc[1:]:  # drop the wrapper's "spec"
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif (item in ("code", "choice") and not parts) or (
            item in REGISTRY and parts and parts[-1].endswith("]")
        ):
            continue  # a union's tag (task kind, check type), not a field the author wrote
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(root)"


def spec_from_data(data: object) -> CodeTask | ChoiceTask:
    if isinstance(data, dict) and "kind" not in data:
        data = {**data, "kind": "code"}
    try:
        return _SpecDocument.model_validate({"spec": data}).spec
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            problems.append((_field_path(loc), err["msg"]))
        raise SpecError(
            "invalid spec: " + "; ".join(f"{path}: {msg}" for path, msg in problems), problems
        ) from None


def parse_spec(text: str) -> CodeTask | ChoiceTask:
    """Parse YAML or JSON (JSON is YAML) into a spec; errors name the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"the spec is not valid YAML or JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError("the spec must be a mapping of fields")
    return spec_from_data(data)


def spec_digest(spec: CodeTask | ChoiceTask) -> str:
    """Content address of a spec version: stable across formatting and key order."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def json_schema() -> dict:
    """The JSON Schema of a spec, generated from the models with their field descriptions;
    `x-reasons` lists, per check type, the reasons a mistake trigger can name."""
    schema = TypeAdapter(TaskSpec).json_schema()
    schema["x-reasons"] = {name: reasons_of(name) for name in sorted(REGISTRY)}
    return schema
