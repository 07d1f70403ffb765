"""Turn what a student sent (code, blank fills or a choice) into code, or a clear refusal."""

from __future__ import annotations

from dataclasses import dataclass

from graders.errors import AnswerError
from graders.spec import BLANK_PATTERN, CodeTask


@dataclass(frozen=True)
class Answer:
    """Exactly one of code, blanks (blank id → option letter or code), choice (a letter)."""

    code: str | None = None
    blanks: dict[int, str] | None = None
    choice: str | None = None


def decode_code(raw: bytes, max_bytes: int) -> str:
    """Bytes of a submitted file → text, refusing what cannot be a Python answer."""
    if len(raw) > max_bytes:
        raise AnswerError(f"the answer is {len(raw):,} bytes; the limit is {max_bytes:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AnswerError(
            f"the answer is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    return check_code(text, max_bytes)


def check_code(text: str, max_bytes: int) -> str:
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise AnswerError(f"the answer is {size:,} bytes; the limit is {max_bytes:,}")
    if "\x00" in text:
        raise AnswerError(f"the answer contains a null byte (at character {text.index(chr(0))})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AnswerError("the answer contains characters that are not valid UTF-8") from None
    return text


def fill_blanks(spec: CodeTask, blanks: dict[int, str]) -> str:
    """The template with each [n] replaced by the chosen option's code (by letter) or the code given."""
    if spec.template is None:
        raise AnswerError(f"task {spec.id} has no template with blanks; send code instead")
    declared = {b.id: b for b in spec.template.blanks}
    unknown = set(blanks) - set(declared)
    if unknown:
        raise AnswerError(
            f"the template has no blank {sorted(unknown)}; its blanks are {sorted(declared)}"
        )
    missing = set(declared) - set(blanks)
    if missing:
        raise AnswerError(f"blank {sorted(missing)} is not filled")
    values = {}
    for bid, value in blanks.items():
        value = value.strip()
        option = declared[bid].options.get(value.upper()) if len(value) == 1 else None
        values[bid] = option if option is not None else value
        if "\n" in values[bid]:
            raise AnswerError(f"blank [{bid}] must be filled on one line")
    return BLANK_PATTERN.sub(lambda m: values[int(m.group(1))], spec.template.code)


def code_for(spec: CodeTask, answer: Answer, max_bytes: int) -> str:
    if answer.blanks is not None:
        return check_code(fill_blanks(spec, answer.blanks), max_bytes)
    if answer.code is None:
        raise AnswerError(f"task {spec.id} is graded on code: send code or blank fills")
    return check_code(answer.code, max_bytes)
