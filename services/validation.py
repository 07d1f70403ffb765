"""The self-test of a spec version: the reference gets full marks, every known-wrong answer less.

The reference run's facts become the version's expected facts; an empty answer's run
records which checks pass without any work (the baseline), so that an answer that only
passes those gets no points.

A sandbox that cannot start is the engine's failure, retried, unless the engine starts
this task's job under the deployment's default limits: then the version's own limits are
what it refuses, and the version is invalid with the engine's reason.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from core.settings import Settings
from graders.judge import Expected, judge_run
from graders.result import GradeResult
from graders.spec import ChoiceTask, CodeTask, spec_digest
from graders.spec import Limits as TaskLimits
from sandbox.base import SandboxBackend
from sandbox.errors import BackendUnavailable, SandboxError
from services.answers import Answer, code_for
from services.expected import load_expected, save_expected
from services.grading import run_code


@dataclass
class SelfTestReport:
    task_id: str
    version: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    expected: Expected | None = None

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(f"FAIL  {line}")

    def good(self, line: str) -> None:
        self.lines.append(f"ok    {line}")

    def text(self) -> str:
        head = f"{self.task_id} @ {self.version[:12]}: {'valid' if self.ok else 'INVALID'}"
        return "\n".join([head, *("  " + line for line in self.lines)])


def _score(result: GradeResult) -> str:
    return f"{result.score:g}/{result.max_score:g} ({result.outcome})"


def validate(
    spec: CodeTask | ChoiceTask,
    *,
    backend: SandboxBackend,
    settings: Settings,
    use_cache: bool = True,
) -> SelfTestReport:
    report = SelfTestReport(spec.id, spec_digest(spec))
    if isinstance(spec, ChoiceTask):
        report.good(
            f"multiple choice, answer key {spec.answer} among {', '.join(sorted(spec.options))}"
        )
        return report
    if use_cache and (cached := load_expected(settings, spec)) is not None:
        report.expected = cached
        report.good("expected facts already computed for this version (self-test passed before)")
        return report
    try:
        _self_test(spec, report, backend, settings)
    except BackendUnavailable:
        raise  # this worker cannot run the task at all (no engine, no GPU): another may
    except SandboxError as exc:
        if not _starts_under_defaults(spec, backend, settings):
            raise  # the engine fails whatever the limits: not the version's fault
        report.fail(
            f"the sandbox cannot start under this version's limits ({_limits_text(spec)}),"
            f" though it starts under the default limits: {exc}"
        )
    return report


def _limits_text(spec: CodeTask) -> str:
    limits = spec.limits
    return (
        f"cpus {limits.cpus:g}, memory_bytes {limits.memory_bytes:,}, "
        f"time_limit_s {limits.time_limit_s:g}, gpu {limits.gpu}"
    )


def _starts_under_defaults(spec: CodeTask, backend: SandboxBackend, settings: Settings) -> bool:
    """Whether the engine runs this task's empty answer under the default limits."""
    plain = spec.model_copy(update={"limits": TaskLimits()})
    if plain.limits == spec.limits:
        return False
    try:
        run_code(plain, "", backend, settings)
    except SandboxError:
        return False
    return True


def _self_test(
    spec: CodeTask, report: SelfTestReport, backend: SandboxBackend, settings: Settings
) -> None:
    summary, facts = run_code(spec, spec.reference, backend, settings)
    if facts is None:
        report.fail(
            f"the reference produced no facts (exit {summary.exit_code}, timed out: {summary.timed_out}; {'; '.join(summary.notes)})"
        )
        return
    provisional = Expected(facts=facts)
    ref = judge_run(spec, report.version, summary, facts, provisional)
    if ref.outcome != "passed" or ref.score != ref.max_score:
        report.fail(f"reference solution scored {_score(ref)}")
        report.lines += [f"        {c.name}: {c.message}" for c in ref.checks if not c.passed]
        if ref.error:
            report.lines.append(f"        {ref.error}")
        return
    report.good(f"reference solution scored {_score(ref)} in {ref.duration_s:.2f} s")

    answers: list[tuple[str, Answer, str | None]] = [
        ("empty answer (baseline)", Answer(code=""), None)
    ]
    answers += [
        (kw.name, Answer(code=kw.code, blanks=kw.blanks), kw.expect_mistake)
        for kw in spec.known_wrong
    ]
    mistakes = {m.id: m.message for m in spec.mistakes}

    def run_one(item: tuple[str, Answer, str | None]):
        return run_code(spec, code_for(spec, item[1], settings.max_code_bytes), backend, settings)

    with ThreadPoolExecutor(max_workers=settings.validation_parallelism) as pool:
        runs = list(pool.map(run_one, answers))

    baseline = judge_run(spec, report.version, *runs[0], provisional)
    baseline_passing = frozenset(c.name for c in baseline.checks if c.passed)
    report.good(f"empty answer passes {', '.join(sorted(baseline_passing)) or 'no check'}")
    expected = Expected(facts=facts, baseline_passing=baseline_passing)
    for (name, _, expect_mistake), run in zip(answers[1:], runs[1:], strict=True):
        result = judge_run(spec, report.version, *run, expected)
        if result.score >= result.max_score:
            report.fail(f"known-wrong {name!r} got full marks {_score(result)}")
        elif expect_mistake and mistakes[expect_mistake] not in result.feedback:
            report.fail(
                f"known-wrong {name!r} scored {_score(result)} but did not report mistake {expect_mistake!r}"
            )
        else:
            report.good(f"known-wrong {name!r} scored {_score(result)}")
    if report.ok:
        report.expected = expected
        save_expected(settings, spec, expected)
