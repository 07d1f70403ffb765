"""A spec as an instructor posts it: parsed, and refused (naming the field) unless it fits
the schema, holds only text that can be stored and served, and asks for limits this
deployment can run."""

from __future__ import annotations

import re
from typing import Any

from core.settings import Settings
from graders.errors import SpecError
from graders.result import printable
from graders.spec import ChoiceTask, CodeTask, LimitBounds, parse_spec
from services.errors import InvalidInput

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def limit_bounds(settings: Settings) -> LimitBounds:
    return LimitBounds(
        time_limit_s=settings.max_task_time_limit_s,
        memory_bytes=settings.max_task_memory_bytes,
        max_output_bytes=settings.max_task_output_bytes,
        cpus=settings.max_task_cpus,
        gpu=settings.gpu != "off",
    )


def parse_posted_spec(body: bytes, settings: Settings) -> CodeTask | ChoiceTask:
    """The spec `body` holds (UTF-8 JSON or YAML); YAML's `"\\udc80"` escape makes a lone
    surrogate, which no UTF-8 text can hold, so such a spec is refused too."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the spec must be UTF-8 text (JSON or YAML)") from None
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        raise InvalidInput(str(exc), exc.problems) from None
    problems = [
        (
            field,
            "holds a lone surrogate (a \\uXXXX escape of half a pair), which no UTF-8 text can hold",
        )
        for field in _unencodable(spec.model_dump(mode="json"), "")[:5]
    ]
    if isinstance(spec, CodeTask):
        problems += spec.limits.beyond(limit_bounds(settings))
    if problems:
        text = "; ".join(f"{path}: {msg}" for path, msg in problems)
        raise InvalidInput("invalid spec: " + text, problems)
    return spec


def _unencodable(data: Any, path: str) -> list[str]:
    """The paths (`checks[0].feedback`) of the strings in `data` that hold a lone surrogate."""
    if isinstance(data, str):
        return [path or "(root)"] if _SURROGATE.search(data) else []
    if isinstance(data, dict):
        found = []
        for key, value in data.items():
            name = printable(str(key))
            if _SURROGATE.search(str(key)):
                found.append(f"{path}.{name} (the key)" if path else f"{name} (the key)")
            found += _unencodable(value, f"{path}.{name}" if path else name)
        return found
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _unencodable(value, f"{path}[{i}]")]
    return []
