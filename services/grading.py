"""Grade one answer: build the job, run it in a sandbox, parse the facts, judge them."""

from __future__ import annotations

import json
import logging
import secrets

from contract.job import Job, ready_marker
from core.settings import Settings
from graders.errors import AnswerError, FactsError, GraderError
from graders.facts import Facts, parse_frame
from graders.judge import Expected, RunSummary, judge_choice, judge_run
from graders.result import GradeResult
from graders.spec import ChoiceTask, CodeTask, spec_digest
from graders.spec import Limits as TaskLimits
from sandbox.base import Limits, RunRequest, SandboxBackend
from sandbox.errors import BackendUnavailable, SandboxError
from services.answers import Answer, code_for
from services.taskbank import is_shipped_setup

log = logging.getLogger(__name__)


def sandbox_limits(spec: CodeTask, gpu: bool) -> Limits:
    return _limits_of(spec.limits, gpu)


def default_sandbox_limits() -> Limits:
    """The limits a task gets when its spec names none: what a worker warms sandboxes for first."""
    return _limits_of(TaskLimits(), gpu=False)


def _limits_of(limits: TaskLimits, gpu: bool) -> Limits:
    return Limits(
        timeout_s=limits.time_limit_s, memory_bytes=limits.memory_bytes, cpus=limits.cpus, gpu=gpu
    )


def choose_device(spec: CodeTask, backend: SandboxBackend) -> tuple[str, list[str]]:
    """cuda when the task asks for a GPU and the backend has one; the CPU otherwise, said so."""
    wanted = spec.limits.gpu
    if wanted == "none":
        return "cpu", []
    if backend.gpu_available:
        return "cuda", []
    if wanted == "required":
        raise BackendUnavailable(f"task {spec.id} requires a GPU and this worker has none")
    return "cpu", ["this task can use a GPU; this worker has none, so it ran on the CPU"]


def run_code(
    spec: CodeTask,
    code: str,
    backend: SandboxBackend,
    settings: Settings,
    *,
    shared_setup: bool | None = None,
) -> tuple[RunSummary, Facts | None]:
    """One sandbox run of `code` after the task's setup, observed by the task's checks.

    A setup the service ships (`shared_setup`: what the task's stored version records) may
    be run once by a fork server for many jobs (a zygote, which prepares the checks after it
    too); any other setup runs in each job's own process, at the answer's privileges. None,
    for a spec with no stored version: whether the bundled bank has the setup (read once)."""
    if shared_setup is None:
        shared_setup = is_shipped_setup(spec, settings.tasks_dir)
    device, notes = choose_device(spec, backend)
    nonce = secrets.token_hex(16)
    job = Job(
        nonce=nonce, task_id=spec.id, setup=spec.setup, code=code, checks=spec.checks,
        seed=spec.seed, max_output_bytes=spec.limits.max_output_bytes, device=device,
    )  # fmt: skip
    shared = b""
    if shared_setup and device == "cpu" and spec.setup.strip():
        checks = [check.model_dump(mode="json") for check in job.checks]
        shared = json.dumps(
            {"setup": spec.setup, "seed": spec.seed, "device": device, "checks": checks}
        ).encode()
    request = RunRequest(
        stdin=job.model_dump_json().encode(),
        limits=sandbox_limits(spec, gpu=device == "cuda"),
        ready_marker=ready_marker(nonce),
        labels={"grader.task": spec.id},
        shared_setup=shared,
    )
    run = backend.run(request)
    facts: Facts | None = None
    if not (run.timed_out or run.oom_killed or run.channel_overflow):
        try:
            facts = parse_frame(run.stdout, nonce)
        except FactsError as exc:
            notes.append(f"no usable facts: {exc}")
            if run.stderr:
                log.info(
                    "sandbox stderr for %s: %s",
                    spec.id,
                    run.stderr[-2000:].decode(errors="replace"),
                )
    summary = RunSummary(
        exit_code=run.exit_code, duration_s=run.duration_s, timed_out=run.timed_out,
        oom_killed=run.oom_killed, channel_overflow=run.channel_overflow,
        backend=backend.name, isolated=backend.isolated, notes=tuple(run.notes + notes),
    )  # fmt: skip
    return summary, facts


def refused(spec: CodeTask | ChoiceTask, message: str) -> GradeResult:
    """An answer that cannot be run at all (too big, not UTF-8, a null byte, bad blanks)."""
    return GradeResult(
        task_id=spec.id, task_version=spec_digest(spec), outcome="compile_error",
        score=0.0, max_score=spec.max_score, error=message,
    )  # fmt: skip


def internal_error(
    spec: CodeTask | ChoiceTask, message: str, backend: SandboxBackend | None
) -> GradeResult:
    return GradeResult(
        task_id=spec.id, task_version=spec_digest(spec), outcome="internal_error",
        score=0.0, max_score=spec.max_score, error=message,
        backend=backend.name if backend else "", isolated=backend.isolated if backend else True,
    )  # fmt: skip


def grade(
    spec: CodeTask | ChoiceTask,
    answer: Answer,
    *,
    backend: SandboxBackend,
    expected: Expected | None,
    settings: Settings,
    shared_setup: bool | None = None,
) -> GradeResult:
    """The result for one answer. Student mistakes are results; only a broken grader raises.
    `shared_setup`: see `run_code`."""
    version = spec_digest(spec)
    if isinstance(spec, ChoiceTask):
        if answer.choice is None:
            return refused(spec, f"task {spec.id} is a multiple-choice question: send a choice")
        return judge_choice(spec, version, answer.choice)
    if expected is None:
        raise GraderError(f"task {spec.id} has no expected facts: validate it first")
    try:
        code = code_for(spec, answer, settings.max_code_bytes)
    except AnswerError as exc:
        return refused(spec, str(exc))
    try:
        summary, facts = run_code(spec, code, backend, settings, shared_setup=shared_setup)
    except SandboxError as exc:
        log.warning("sandbox failed for %s: %s", spec.id, exc)
        return internal_error(
            spec, f"the sandbox failed; this is not your fault and was not counted ({exc})", backend
        )
    return judge_run(spec, version, summary, facts, expected)
