"""The bundled task bank: specs under taskbank/tasks, example answers under taskbank/examples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from graders.errors import SpecError, UnknownTaskError
from graders.spec import ChoiceTask, CodeTask, parse_spec
from services.answers import Answer

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "taskbank" / "examples"


def load_spec_file(path: Path) -> CodeTask | ChoiceTask:
    try:
        return parse_spec(path.read_text(encoding="utf-8"))
    except SpecError as exc:
        raise SpecError(f"{path.name}: {exc}") from None


def load_tasks(tasks_dir: Path) -> dict[str, CodeTask | ChoiceTask]:
    tasks: dict[str, CodeTask | ChoiceTask] = {}
    for path in sorted(tasks_dir.glob("*.yaml")):
        spec = load_spec_file(path)
        if spec.id in tasks:
            raise SpecError(f"{path.name}: task id {spec.id!r} is used twice")
        tasks[spec.id] = spec
    return tasks


@lru_cache(maxsize=8)
def shipped_setups(tasks_dir: Path) -> frozenset[str]:
    """The setup code of every task in the bank: the service's own code, which a fork
    server may run once and fork many jobs from (an instructor's setup runs in each job).
    Read once per process; a bank that cannot be read shares nothing."""
    try:
        tasks = load_tasks(tasks_dir)
    except (OSError, SpecError):
        return frozenset()
    return frozenset(spec.setup for spec in tasks.values() if isinstance(spec, CodeTask))


def is_shipped_setup(spec: CodeTask | ChoiceTask, tasks_dir: Path) -> bool:
    """Whether `spec`'s setup is byte for byte a bundled task's (and not empty): the same
    trusted code, whoever posted it. What a version records when it is stored; for a spec
    with no stored version (gradectl, tests) the answer itself."""
    return (
        isinstance(spec, CodeTask)
        and bool(spec.setup.strip())
        and spec.setup in shipped_setups(tasks_dir)
    )


def get_task(tasks_dir: Path, task_id: str) -> CodeTask | ChoiceTask:
    tasks = load_tasks(tasks_dir)
    if task_id not in tasks:
        raise UnknownTaskError(f"no task {task_id!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[task_id]


@dataclass(frozen=True)
class Example:
    task_id: str
    name: str
    answer: Answer
    expect: str  # "full" or "partial": what the bundled answer should get


def load_examples(task_id: str) -> list[Example]:
    """Files in taskbank/examples/<task>/: NAME.py (code), NAME.blanks.json, NAME.choice.

    A name starting with `wrong_` is expected to get less than full marks.
    """
    folder = EXAMPLES_DIR / task_id
    out = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        name, _, kind = path.name.partition(".")
        text = path.read_text(encoding="utf-8")
        if kind == "py":
            answer = Answer(code=text)
        elif kind == "blanks.json":
            answer = Answer(blanks={int(k): str(v) for k, v in json.loads(text).items()})
        elif kind == "choice":
            answer = Answer(choice=text.strip())
        else:
            continue
        out.append(
            Example(task_id, name, answer, "partial" if name.startswith("wrong_") else "full")
        )
    return out
