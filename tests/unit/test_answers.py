"""What a student sends becomes runnable code, or a refusal that says what is wrong."""

from __future__ import annotations

import json

import pytest

from graders.errors import AnswerError
from graders.spec import parse_spec
from services.answers import Answer, check_code, code_for, decode_code, fill_blanks

LIMIT = 1024

TEMPLATE_SPEC = parse_spec(
    json.dumps(
        {
            "id": "blanks-demo",
            "title": "Blanks",
            "difficulty": "easy",
            "prompt": "Fill the blanks.",
            "template": {
                "code": "for p in model.parameters():\n    p.[1] = [2]\n",
                "blanks": [
                    {"id": 1, "options": {"A": "grad", "D": "requires_grad"}},
                    {"id": 2, "options": {"A": "True", "B": "False"}},
                ],
            },
            "reference": "model.requires_grad_(False)\n",
            "checks": [{"name": "frozen", "type": "trainable_params"}],
        }
    )
)
FROZEN = "for p in model.parameters():\n    p.requires_grad = False\n"


def test_utf8_code_is_accepted_as_is():
    assert decode_code("print('größe')\n".encode(), LIMIT) == "print('größe')\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"x = 1\x00\n", r"contains a null byte \(at character 5\)", id="null-byte"),
        pytest.param(
            b"x = '\xff'\n", r"not UTF-8 text \(invalid byte at offset 5\)", id="not-utf8"
        ),
        pytest.param(b"#" * (LIMIT + 1), "1,025 bytes; the limit is 1,024", id="too-big"),
    ],
)
def test_undecodable_or_oversized_files_are_refused(raw, expected):
    with pytest.raises(AnswerError, match=expected):
        decode_code(raw, LIMIT)


def test_oversize_is_counted_in_utf8_bytes_not_characters():
    with pytest.raises(AnswerError, match="1,026 bytes"):
        check_code("é" * 513, LIMIT)


def test_lone_surrogates_are_refused():
    with pytest.raises(AnswerError, match="not valid UTF-8"):
        check_code("x = '\ud800'\n", LIMIT)


@pytest.mark.parametrize(
    "blanks",
    [
        pytest.param({1: "D", 2: "B"}, id="letters"),
        pytest.param({1: " d ", 2: "b"}, id="lowercase-letters"),
        pytest.param({1: "requires_grad", 2: "False"}, id="literal-code"),
        pytest.param({1: "D", 2: "False"}, id="mixed"),
    ],
)
def test_blanks_fill_by_option_letter_or_literal_code(blanks):
    assert fill_blanks(TEMPLATE_SPEC, blanks) == FROZEN


@pytest.mark.parametrize(
    ("blanks", "expected"),
    [
        pytest.param(
            {1: "D", 2: "B", 3: "A"}, r"no blank \[3\]; its blanks are \[1, 2\]", id="unknown"
        ),
        pytest.param({1: "D"}, r"blank \[2\] is not filled", id="missing"),
        pytest.param(
            {1: "D", 2: "False\nimport os"},
            r"blank \[2\] must be filled on one line",
            id="multi-line",
        ),
    ],
)
def test_bad_blank_fills_are_refused(blanks, expected):
    with pytest.raises(AnswerError, match=expected):
        fill_blanks(TEMPLATE_SPEC, blanks)


def test_blanks_for_a_task_without_template_are_refused():
    spec = TEMPLATE_SPEC.model_copy(update={"template": None})
    with pytest.raises(AnswerError, match="has no template with blanks"):
        fill_blanks(spec, {1: "D"})


def test_code_for_checks_the_filled_template_and_plain_code():
    assert code_for(TEMPLATE_SPEC, Answer(blanks={1: "D", 2: "B"}), LIMIT) == FROZEN
    assert code_for(TEMPLATE_SPEC, Answer(code=FROZEN), LIMIT) == FROZEN
    with pytest.raises(AnswerError, match="null byte"):
        code_for(TEMPLATE_SPEC, Answer(code="x\x00"), LIMIT)
    with pytest.raises(AnswerError, match="57 bytes; the limit is 32"):
        code_for(TEMPLATE_SPEC, Answer(blanks={1: "D", 2: "B"}), 32)
    with pytest.raises(AnswerError, match="send code or blank fills"):
        code_for(TEMPLATE_SPEC, Answer(choice="A"), LIMIT)
