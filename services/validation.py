"""The self-test of a spec version: the reference gets full marks, every known-wrong answer less.

The reference run's facts become the version's expected facts; an empty answer's run
records which checks pass without any work (the baseline), so that an answer that only
passes those gets no points. A known-wrong answer that names its mistakes must be told
those and no other; the reference's time is measured against the time limit.

A sandbox that cannot start is the engine's failure, retried, unless the engine starts
this task's job under the deployment's default limits: then the version's own limits are
what it refuses, and the version is invalid with the engine's reason.
"""

from __future__ import annotations

import math
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
from services.expected import computing, load_expected, save_expected
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
    shared_setup: bool | None = None,
) -> SelfTestReport:
    """Self-test `spec`. `shared_setup`: what its stored version records, whether its setup
    is the service's own (None, for a spec with no stored version: see grading.run_code)."""
    report = SelfTestReport(spec.id, spec_digest(spec))
    if isinstance(spec, ChoiceTask):
        report.good(
            f"multiple choice, answer key {spec.answer} among {', '.join(sorted(spec.options))}"
        )
        return report
    if not use_cache:
        return _fresh(spec, report, backend, settings, shared_setup)
    with computing(settings, spec):
        if (cached := load_expected(settings, spec)) is not None:
            report.expected = cached
            report.good(
                "expected facts already computed for this version (self-test passed before)"
            )
            return report
        return _fresh(spec, report, backend, settings, shared_setup)


def _fresh(
    spec: CodeTask,
    report: SelfTestReport,
    backend: SandboxBackend,
    settings: Settings,
    shared_setup: bool | None,
) -> SelfTestReport:
    try:
        _self_test(spec, report, backend, settings, shared_setup)
    except BackendUnavailable:
        raise  # this worker cannot run the task at all (no engine, no GPU): another may
    except SandboxError as exc:
        if not _starts_under_defaults(spec, backend, settings, shared_setup):
            raise  # the engine fails whatever the limits: not the version's fault
        report.fail(
            f"the sandbox cannot start under this version's limits ({_limits_text(spec)}),"
            f" though it starts under the default limits: {exc}"
        )
    return report


# A limit well above the reference's own time: room for a slower worker and a busier
# machine, yet an endless loop is stopped soon (PrairieLearn's default is 30 s).
LIMIT_FACTOR = 20.0
LIMIT_FLOOR_S = 5.0
TIGHT_FACTOR = 3.0


def suggested_limit(seconds: float) -> float:
    """A time limit for a task whose reference runs (answer and observers) in `seconds`."""
    return float(max(LIMIT_FLOOR_S, math.ceil(LIMIT_FACTOR * seconds)))


def _time_limit(spec: CodeTask, facts, report: SelfTestReport) -> None:
    """Measure the reference's time against the limit, which counts the same span."""
    timings = facts.manifest.timings
    took = timings.get("student_s", 0.0) + timings.get("observe_s", 0.0)
    limit, fit = spec.limits.time_limit_s, suggested_limit(took)
    line = (
        f"the reference runs in {took:.2f} s (answer and checks; setup excluded); "
        f"time limit {limit:g} s"
    )
    if limit < TIGHT_FACTOR * took:
        report.fail(f"{line}: too tight, a correct answer would be stopped; use {fit:g} s")
    elif limit > 2 * fit and limit > 30:
        report.good(f"{line}; {fit:g} s would do (an endless loop holds a sandbox that long)")
    else:
        report.good(line)


def _limits_text(spec: CodeTask) -> str:
    limits = spec.limits
    return (
        f"cpus {limits.cpus:g}, memory_bytes {limits.memory_bytes:,}, "
        f"time_limit_s {limits.time_limit_s:g}, gpu {limits.gpu}"
    )


def _starts_under_defaults(
    spec: CodeTask, backend: SandboxBackend, settings: Settings, shared_setup: bool | None
) -> bool:
    """Whether the engine runs this task's empty answer under the default limits."""
    plain = spec.model_copy(update={"limits": TaskLimits()})
    if plain.limits == spec.limits:
        return False
    try:
        run_code(plain, "", backend, settings, shared_setup=shared_setup)
    except SandboxError:
        return False
    return True


def _self_test(
    spec: CodeTask,
    report: SelfTestReport,
    backend: SandboxBackend,
    settings: Settings,
    shared_setup: bool | None,
) -> None:
    def run(code: str):
        return run_code(spec, code, backend, settings, shared_setup=shared_setup)

    summary, facts = run(spec.reference)
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
    if ref.feedback:
        report.fail(f"the reference solution is told a mistake: {ref.feedback[0][:200]}")
    report.good(f"reference solution scored {_score(ref)} in {ref.duration_s:.2f} s")
    _time_limit(spec, facts, report)

    answers: list[tuple[str, Answer, tuple[str, ...]]] = [
        ("empty answer (baseline)", Answer(code=""), ())
    ]
    answers += [
        (kw.name, Answer(code=kw.code, blanks=kw.blanks), kw.intended) for kw in spec.known_wrong
    ]

    def run_one(item: tuple[str, Answer, tuple[str, ...]]):
        return run(code_for(spec, item[1], settings.max_code_bytes))

    with ThreadPoolExecutor(max_workers=settings.validation_parallelism) as pool:
        runs = list(pool.map(run_one, answers))

    baseline = judge_run(spec, report.version, *runs[0], provisional)
    baseline_passing = frozenset(c.name for c in baseline.checks if c.passed)
    report.good(f"empty answer passes {', '.join(sorted(baseline_passing)) or 'no check'}")
    expected = Expected(facts=facts, baseline_passing=baseline_passing)
    for (name, _, intended), run in zip(answers[1:], runs[1:], strict=True):
        result = judge_run(spec, report.version, *run, expected)
        failing = ", ".join(c.name for c in result.checks if not c.passed) or "no check"
        told = result.mistakes
        line = f"known-wrong {name!r} scored {_score(result)}, fails {failing}; " + (
            f"told {', '.join(told)}" if told else "told no mistake"
        )
        missing = [m for m in intended if m not in told]
        other = [m for m in told if intended and m not in intended]
        if result.score >= result.max_score:
            report.fail(f"known-wrong {name!r} got full marks {_score(result)}")
        elif missing:
            report.fail(f"{line}, not the intended {', '.join(missing)}")
        elif other:
            report.fail(f"{line}: {', '.join(other)} was not intended")
        else:
            report.good(line + (" (as intended)" if intended else ""))
    if report.ok:
        report.expected = expected
        save_expected(settings, spec, expected)
