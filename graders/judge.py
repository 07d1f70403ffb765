"""The trusted half: turn a sandbox run and its facts into a `GradeResult`.

Runs on the host. It never imports or executes anything the sandbox produced: it reads
the run's bookkeeping (deadline, OOM, channel overflow, exit code) and the parsed facts,
compares each check's facts with the expected facts of the reference run, and scores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from graders.checks import REGISTRY, reasons_of
from graders.checks.base import Observed, Verdict
from graders.facts import Facts
from graders.result import CheckResult, GradeResult, LossCurve, Outcome
from graders.spec import ChoiceTask, CodeTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What the sandbox backend saw, independent of which backend it was."""

    exit_code: int | None
    duration_s: float
    timed_out: bool = False
    oom_killed: bool = False
    channel_overflow: bool = False
    backend: str = ""
    isolated: bool = True
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expected:
    """The reference run's facts and which checks an empty answer already passes."""

    facts: Facts
    baseline_passing: frozenset[str] = field(default_factory=frozenset)


def _verdict(check, facts: Facts, expected: Facts | None) -> Verdict:
    verdict = _judged(check, facts, expected)
    known = reasons_of(check.type)
    unknown = verdict.reasons - known.keys()
    if unknown:  # a judge's bug, never the answer's: the verdict stands without them
        log.error("check type %s gave undeclared reasons %s", check.type, sorted(unknown))
        verdict = Verdict(verdict.passed, verdict.message, verdict.reasons & known.keys())
    return verdict


def _judged(check, facts: Facts, expected: Facts | None) -> Verdict:
    module = REGISTRY[check.type]
    obs = facts.manifest.observations.get(check.name)
    if obs is None:
        return Verdict.fail("this check was not observed", "not-observed")
    if obs.error is not None:
        reason = obs.reason if obs.reason in reasons_of(check.type) else "unobservable"
        return Verdict.fail(obs.error, reason)
    try:
        parsed = module.Facts.model_validate(obs.facts)
    except ValidationError as exc:
        return Verdict.fail(
            f"the observed facts were malformed ({exc.error_count()} problems)", "unobservable"
        )
    exp_observed = None
    if expected is not None:
        exp = expected.manifest.observations.get(check.name)
        if exp is None or exp.facts is None:
            raise ValueError(f"expected facts hold no observation for check {check.name!r}")
        exp_observed = Observed(
            module.Facts.model_validate(exp.facts), expected.tensors.get(check.name, {})
        )
    try:
        return module.judge(
            check, Observed(parsed, facts.tensors.get(check.name, {})), exp_observed
        )
    except Exception as exc:  # a check that raises is a failed check, never a crashed grading
        log.exception("check %s (%s) raised while judging", check.name, check.type)
        return Verdict(
            False, f"this check could not be judged ({type(exc).__name__}): please report it"
        )


def _told(
    spec: CodeTask, outcome: Outcome, results: list[CheckResult], error_line: str | None
) -> dict[str, list[str]]:
    """The mistakes whose every condition holds (an outcome, a failed check, a reason a
    failed check found ("check:reason"), the answer's exception), as the result's
    `feedback` (their messages) and `mistakes` (their ids), in the task's order."""
    failed = {r.name for r in results if not r.passed}
    found = {f"{r.name}:{code}" for r in results if not r.passed for code in r.reasons}
    out = []
    for mistake in spec.mistakes:
        when = mistake.when
        if when.outcomes and outcome not in when.outcomes:
            continue
        if when.failed_checks and not failed.intersection(when.failed_checks):
            continue
        if when.reasons and not found.intersection(when.reasons):
            continue
        if when.error_matches and not (error_line and re.search(when.error_matches, error_line)):
            continue
        out.append(mistake)
    return {"feedback": [m.message for m in out], "mistakes": [m.id for m in out]}


def _limit_result(spec: CodeTask, outcome: Outcome, message: str, **common) -> GradeResult:
    return GradeResult(
        outcome=outcome, score=0.0, max_score=spec.max_score, error=message,
        **_told(spec, outcome, [], message), **common,
    )  # fmt: skip


def judge_run(
    spec: CodeTask,
    task_version: str,
    run: RunSummary,
    facts: Facts | None,
    expected: Expected | None,
) -> GradeResult:
    """Score one run. `expected` is None only while computing the expected facts themselves."""
    limits = spec.limits
    common = {
        "task_id": spec.id,
        "task_version": task_version,
        "duration_s": round(run.duration_s, 3),
        "backend": run.backend,
        "isolated": run.isolated,
        "notes": list(run.notes),
    }
    if run.timed_out:
        return _limit_result(
            spec,
            "time_limit",
            f"your code ran past the time limit of {limits.time_limit_s:g} s and was stopped",
            **common,
        )
    if run.oom_killed:
        return _limit_result(
            spec,
            "memory_limit",
            f"your code used more than the memory limit of {limits.memory_bytes // 2**20} MiB and was stopped",
            **common,
        )
    if run.channel_overflow:
        return _limit_result(
            spec, "output_limit", "your code wrote more output than the sandbox accepts", **common
        )
    if facts is None:
        return _limit_result(
            spec, "runtime_error",
            f"your program ended before the grader could observe it (exit status {run.exit_code}); "
            "do not call os._exit(), kill the process, or close its files",
            **common,
        )  # fmt: skip

    m = facts.manifest
    common |= {"stdout": m.stdout, "stderr": m.stderr}
    common["notes"] = common["notes"] + list(m.notes)
    if m.status == "setup_error":
        log.error(
            "task %s: setup failed in the sandbox: %s", spec.id, m.error.message if m.error else "?"
        )
        return _limit_result(
            spec,
            "internal_error",
            "the task's own setup failed; this is not your fault and was not counted",
            **common,
        )
    if m.stdout_bytes > limits.max_output_bytes or m.stderr_bytes > limits.max_output_bytes:
        return _limit_result(
            spec, "output_limit",
            f"your code printed {max(m.stdout_bytes, m.stderr_bytes):,} bytes; the limit is {limits.max_output_bytes:,}",
            **common,
        )  # fmt: skip
    if m.status == "compile_error":
        return _limit_result(
            spec,
            "compile_error",
            m.error.message if m.error else "your code does not compile",
            **common,
        )
    if m.status == "memory_limit":
        return _limit_result(
            spec,
            "memory_limit",
            f"your code ran out of memory: {m.error.traceback if m.error else ''}",
            **common,
        )

    results: list[CheckResult] = []
    for check in spec.checks:
        verdict = _verdict(check, facts, expected.facts if expected else None)
        message = verdict.message
        if not verdict.passed and check.feedback:
            message = f"{message}. {check.feedback}"
        results.append(
            CheckResult(
                name=check.name, passed=verdict.passed, points=check.points if verdict.passed else 0.0,
                max_points=check.points, message=message, reasons=sorted(verdict.reasons),
            )
        )  # fmt: skip
    passed = {r.name for r in results if r.passed}
    failed = {r.name for r in results if not r.passed}
    score = sum(r.points for r in results)
    notes = common.pop("notes")
    if expected is not None and passed and passed <= expected.baseline_passing and failed:
        notes.append(
            "no points: every check your answer passes also passes without any answer "
            f"({', '.join(sorted(passed))}); the task's own checks all failed"
        )
        why = (
            " (0 points: an empty answer passes this check too, and every check that needs "
            f"your work failed: {', '.join(sorted(failed))})"
        )
        score, results = 0.0, _no_points(results, why)
    elif expected is not None and failed:
        # Facts the answer's own code computes (what its forward returns, its assertions)
        # do not unlock the checks an empty answer passes: only a check read from state does.
        baseline = passed & expected.baseline_passing
        self_reported = {
            c.name for c in spec.checks if getattr(REGISTRY[c.type], "SELF_REPORTED", False)
        }
        from_state = {c.name for c in spec.checks} - expected.baseline_passing - self_reported
        if baseline and from_state and not passed & from_state:
            notes.append(
                "no points for the checks an empty answer passes too "
                f"({', '.join(sorted(baseline))}): every check read from the model's state "
                f"failed ({', '.join(sorted(from_state))})"
            )
            why = (
                " (0 points: an empty answer passes this check too, and every check read from "
                f"your model's state failed: {', '.join(sorted(from_state))})"
            )
            results = _no_points(results, why, baseline)
            score = sum(r.points for r in results)
    if m.status == "runtime_error" and score:
        # An answer that raised did not run to its end: what it left behind is reported
        # check by check, but it earns nothing (the state at a crash is not an answer).
        score, results = (
            0.0,
            _no_points(results, " (0 points: your code raised an exception before it finished)"),
        )
    outcome: Outcome = (
        "runtime_error" if m.status == "runtime_error" else ("passed" if not failed else "failed")
    )
    error = m.error.traceback if m.error else None
    error_line = m.error.message if m.error else None
    return GradeResult(
        outcome=outcome, score=round(score, 6), max_score=spec.max_score, checks=results,
        **_told(spec, outcome, results, error_line), error=error, notes=notes,
        loss_curve=_loss_curve(spec, facts, expected.facts if expected else None), **common,
    )  # fmt: skip


def _losses(check, facts: Facts | None) -> list[float | None] | None:
    """What `check`'s type shows as the loss per iteration, from its facts in `facts`; None
    when its type shows none or they were not observed (or not well formed)."""
    module = REGISTRY[check.type]
    read = getattr(module, "losses", None)
    obs = facts.manifest.observations.get(check.name) if facts is not None else None
    if read is None or obs is None or obs.facts is None:
        return None
    try:
        return read(module.Facts.model_validate(obs.facts))
    except ValidationError:
        return None


def _loss_curve(spec: CodeTask, facts: Facts, expected: Facts | None) -> LossCurve | None:
    """The answer's loss per iteration beside the reference run's (empty where the expected
    facts predate it), from the first check whose type records one. Shown, never scored:
    it is made after the score and changes nothing of it."""
    for check in spec.checks:
        mine = _losses(check, facts)
        if mine is not None:
            return LossCurve(answer=mine, reference=_losses(check, expected) or [])
    return None


def _no_points(
    results: list[CheckResult], why: str, only: frozenset[str] | set[str] | None = None
) -> list[CheckResult]:
    """The checks (those named in `only`, if given) with no points, each passed one saying
    `why` in its own line."""
    return [
        r.model_copy(update={"points": 0.0, "message": r.message + (why if r.passed else "")})
        if only is None or r.name in only
        else r
        for r in results
    ]


def judge_choice(spec: ChoiceTask, task_version: str, choice: str) -> GradeResult:
    letter = choice.strip().upper()
    correct = letter == spec.answer
    if letter not in spec.options:
        message = f"{choice!r} is not one of the options {', '.join(sorted(spec.options))}"
    elif correct:
        message = f"{letter} is correct"
    else:
        message = f"{letter} is not correct"
    feedback = (
        [] if correct or letter not in spec.option_feedback else [spec.option_feedback[letter]]
    )
    if spec.explanation:
        feedback.append(spec.explanation)
    return GradeResult(
        task_id=spec.id, task_version=task_version, outcome="passed" if correct else "failed",
        score=spec.points if correct else 0.0, max_score=spec.points,
        checks=[CheckResult(name="answer", passed=correct, points=spec.points if correct else 0.0, max_points=spec.points, message=message)],
        feedback=feedback, backend="none",
    )  # fmt: skip
