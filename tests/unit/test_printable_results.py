"""Every text the host takes from a sandbox, and every text of a result, is valid UTF-8 with no
control characters: JSON's `\\udXXX` escapes make lone surrogates in a Python string, which
no UTF-8 text can hold, and a result holding one could be neither stored nor served."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graders.errors import FactsError
from graders.facts import dump_facts, load_stored_facts, parse_frame
from graders.judge import judge_run
from graders.result import CheckResult, GradeResult
from tests.unit.test_facts import (
    EXPECTED,
    GOOD,
    NONCE,
    RUN,
    SPEC,
    frame,
    manifest,
)

# The edges of both halves of the surrogate range, one in the middle, a reversed pair (a
# pair in order is a character once JSON decodes it), and every control character but
# tab, newline and carriage return, which output keeps.
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udc80", "\udfff", "\udc00\ud800"]
CONTROLS = [chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), *range(127, 160)]]
HOSTILE = "|".join(SURROGATES + CONTROLS)
KEPT = "\t\n\r"


def unprintable(data: object, path: str = "") -> list[str]:
    """Where `data` holds a string (key or value) with a surrogate or a control character."""
    if isinstance(data, str):
        bad = [c for c in data if 0xD800 <= ord(c) <= 0xDFFF or (c in CONTROLS)]
        return [f"{path}: {bad[:3]!r}"] if bad else []
    if isinstance(data, dict):
        found = [p for k in data for p in unprintable(k, f"{path}/(key)")]
        return found + [p for k, v in data.items() for p in unprintable(v, f"{path}/{k!r}")]
    if isinstance(data, list | tuple):
        return [p for i, v in enumerate(data) for p in unprintable(v, f"{path}[{i}]")]
    return []


def escapes(text: str) -> list[str]:
    return [f"\\u{ord(c):04x}" for c in text if c != "|"]


def hostile_manifest() -> dict:
    """A frame whose every string, and every key an answer could choose, is hostile."""
    observations = json.loads(json.dumps(GOOD))
    params = observations["frozen"]["facts"]["parameters"]
    params["w" + HOSTILE] = params.pop("w")
    observations["asserts"] = {"facts": None, "error": "assert failed " + HOSTILE}
    observations["extra" + HOSTILE] = {"facts": {"k" + HOSTILE: ["v" + HOSTILE]}}
    return manifest(
        stdout="out" + HOSTILE + KEPT,
        stderr="err" + HOSTILE,
        notes=["note" + HOSTILE],
        error={"message": "ValueError: " + HOSTILE, "traceback": "Traceback " + HOSTILE},
        status="runtime_error",
        observations=observations,
        timings={"t" + HOSTILE: 0.1},
    )


def test_every_string_of_a_frame_is_made_printable_and_stays_legible():
    facts = parse_frame(frame(hostile_manifest()), NONCE)
    data = facts.manifest.model_dump(mode="json")
    assert unprintable(data) == []
    assert facts.manifest.stdout.startswith("out") and facts.manifest.stdout.endswith(KEPT)
    for field in (facts.manifest.stdout, facts.manifest.error.traceback, *facts.manifest.notes):
        assert all(e in field for e in escapes(HOSTILE)), field
    assert any(e in facts.manifest.model_dump_json() for e in escapes("\udc80"))
    stored = load_stored_facts(*dump_facts(facts))  # the expected facts' round trip
    assert stored.manifest == facts.manifest


def test_names_that_escaping_would_make_equal_are_refused_not_merged():
    """Merging two names would hide one parameter (a trainable one behind a frozen one)."""
    observations = json.loads(json.dumps(GOOD))
    params = observations["frozen"]["facts"]["parameters"]
    params["x\udc80"] = {"numel": 1, "requires_grad": True}
    params["x\\udc80"] = {"numel": 1, "requires_grad": False}
    with pytest.raises(FactsError, match="malformed facts manifest"):
        parse_frame(frame(manifest(observations=observations)), NONCE)


def test_tensor_names_are_made_printable_like_the_names_they_belong_to():
    name = "frozen/w" + "".join(CONTROLS)
    parsed = parse_frame(frame(manifest(), {name: np.ones(2, np.float32)}), NONCE)
    (stored,) = parsed.tensors["frozen"]
    assert unprintable(stored) == [] and stored.startswith("w\\u0000")
    clash = {"frozen/w\x01": np.ones(1, np.float32), "frozen/w\\u0001": np.ones(1, np.float32)}
    with pytest.raises(FactsError, match="printable"):
        parse_frame(frame(manifest(), clash), NONCE)


def test_a_result_judged_from_hostile_facts_can_be_stored_and_served():
    facts = parse_frame(frame(hostile_manifest()), NONCE)
    result = judge_run(SPEC, "v1", RUN, facts, EXPECTED)
    served = result.model_dump_json().encode("utf-8")
    assert unprintable(json.loads(served)) == []
    assert result.outcome == "runtime_error"


def test_a_result_built_with_hostile_texts_holds_only_printable_ones():
    pair = "\ud83d\ude00"  # in order, but two lone code points to Python until encoded
    texts = [*SURROGATES, pair, *CONTROLS]
    hostile = "|".join(texts)
    result = GradeResult(
        task_id="t", task_version="v", outcome="failed", score=0, max_score=1,
        checks=[CheckResult(name="c" + hostile, passed=False, points=0, max_points=1, message=hostile)],
        feedback=[hostile], error=hostile, stdout=hostile + KEPT, stderr=hostile, notes=[hostile],
    )  # fmt: skip
    data = json.loads(result.model_dump_json())
    assert unprintable(data) == []
    assert data["stdout"] == "|".join("".join(escapes(t)) for t in texts) + KEPT


def test_printable_text_is_left_as_it_is():
    plain = parse_frame(frame(manifest(stdout="naïve ✓ 😀\ttab\n")), NONCE)
    assert plain.manifest.stdout == "naïve ✓ 😀\ttab\n"


def _nested_frame(depth: int) -> bytes:
    nested = "[" * depth + "]" * depth
    body = json.dumps(manifest()).replace(
        json.dumps({"facts": {"parameters": {}}}),
        json.dumps('{"facts": {"parameters": {}, "deep": ' + nested + "}}"),
    )
    return frame(body.encode())


def test_nested_facts_are_walked():
    parsed = parse_frame(_nested_frame(100), NONCE)
    assert parsed.manifest.observations["frozen"].facts["deep"] is not None


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_facts_nested_deeper_than_any_walk_are_refused_not_a_crash(depth):
    with pytest.raises(FactsError, match="malformed facts manifest"):
        parse_frame(_nested_frame(depth), NONCE)
