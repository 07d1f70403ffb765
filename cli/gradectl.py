"""`gradectl`: grade answers, validate specs and inspect the task bank from a shell.

gradectl tasks                          list the bundled tasks
gradectl schema [--reasons]             print the spec JSON Schema (or the trigger reasons)
gradectl validate SPEC... | --all       self-test specs (reference full marks, known-wrong less)
gradectl grade TASK FILE [--blanks JSON] [--choice X] [--json] [--backend B]
gradectl examples                       grade every bundled example answer, print a table
gradectl worker [--concurrency N]       a grading worker (one process per core) and the reaper
gradectl link --course C --student S    a learner's one-time link into the pages
gradectl lti add-platform|list-platforms|remove-platform|rotate-key   LTI 1.3 platforms
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from core.settings import Settings, get_settings
from graders.errors import AnswerError, GraderError
from graders.result import GradeResult
from graders.spec import ChoiceTask, CodeTask, json_schema
from sandbox.base import SandboxBackend
from sandbox.checkpoints import ensure_checkpoints
from sandbox.errors import SandboxError
from sandbox.factory import get_backend
from services.answers import Answer, decode_code
from services.errors import ServiceError
from services.grading import grade, refused
from services.taskbank import get_task, load_examples, load_spec_file, load_tasks
from services.validation import validate

EXIT_USAGE = 2


def _backend(args: argparse.Namespace, settings: Settings) -> SandboxBackend:
    ensure_checkpoints(settings.torch_home)
    backend = get_backend(args.backend or settings.sandbox_backend, settings)
    if not backend.isolated:
        print(f"warning: {backend.describe()}", file=sys.stderr)
    return backend


def _expected(spec: CodeTask | ChoiceTask, backend: SandboxBackend, settings: Settings):
    if isinstance(spec, ChoiceTask):
        return None
    report = validate(spec, backend=backend, settings=settings)
    if not report.ok:
        raise GraderError(
            f"task {spec.id} failed its self-test, so it cannot grade:\n{report.text()}"
        )
    return report.expected


def _print_result(result: GradeResult, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    print(
        f"{result.task_id}: {result.outcome}  {result.score:g}/{result.max_score:g}  ({result.duration_s:.2f} s, {result.backend})"
    )
    for c in result.checks:
        found = f" [{', '.join(c.reasons)}]" if c.reasons else ""
        print(
            f"  [{'x' if c.passed else ' '}] {c.name} ({c.points:g}/{c.max_points:g}){found}: {c.message}"
        )
    for line in result.feedback:
        print(f"  feedback: {line}")
    if result.error:
        print("  " + result.error.replace("\n", "\n  "))
    for note in result.notes:
        print(f"  note: {note}")


def cmd_tasks(args: argparse.Namespace, settings: Settings) -> int:
    for spec in load_tasks(settings.tasks_dir).values():
        print(f"{spec.id:32} {spec.kind:6} {spec.difficulty:6} {spec.title}")
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    schema = json_schema()
    if not args.reasons:
        print(json.dumps(schema, indent=2))
        return 0
    for check_type, reasons in schema["x-reasons"].items():
        print(check_type)
        for code, meaning in reasons.items():
            print(f"  {code:24} {meaning}")
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    specs = (
        list(load_tasks(settings.tasks_dir).values())
        if args.all
        else [load_spec_file(Path(p)) for p in args.specs]
    )
    if not specs:
        print("nothing to validate: give spec files or --all", file=sys.stderr)
        return EXIT_USAGE
    backend = _backend(args, settings)
    failures = 0
    for spec in specs:
        report = validate(spec, backend=backend, settings=settings, use_cache=not args.fresh)
        print(report.text())
        failures += not report.ok
    return 1 if failures else 0


def cmd_grade(args: argparse.Namespace, settings: Settings) -> int:
    spec = get_task(settings.tasks_dir, args.task)
    if args.blanks is not None:
        try:
            blanks = {int(k): str(v) for k, v in json.loads(args.blanks).items()}
        except (ValueError, AttributeError) as exc:
            print(f'--blanks must be a JSON object like {{"1": "C"}}: {exc}', file=sys.stderr)
            return EXIT_USAGE
        answer = Answer(blanks=blanks)
    elif args.choice is not None:
        answer = Answer(choice=args.choice)
    elif args.file is None:
        print("give a FILE with the answer, --blanks or --choice", file=sys.stderr)
        return EXIT_USAGE
    else:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        if isinstance(spec, ChoiceTask):
            answer = Answer(choice=raw.decode(errors="replace").strip())
        else:
            try:
                answer = Answer(code=decode_code(raw, settings.max_code_bytes))
            except AnswerError as exc:
                _print_result(refused(spec, str(exc)), args.json)
                return 0
    backend = _backend(args, settings) if isinstance(spec, CodeTask) else None
    expected = _expected(spec, backend, settings) if backend else None
    result = grade(spec, answer, backend=backend, expected=expected, settings=settings)
    _print_result(result, args.json)
    return 0


def cmd_examples(args: argparse.Namespace, settings: Settings) -> int:
    """Grade every bundled example answer and print a table; exit 1 if any is graded unexpectedly."""
    tasks = load_tasks(settings.tasks_dir)
    backend = _backend(args, settings)
    rows, surprises = [], 0
    for spec in tasks.values():
        expected = _expected(spec, backend, settings)
        for ex in load_examples(spec.id):
            result = grade(spec, ex.answer, backend=backend, expected=expected, settings=settings)
            full = result.score >= result.max_score
            ok = full if ex.expect == "full" else not full
            surprises += not ok
            rows.append(
                (
                    spec.id,
                    ex.name,
                    result.outcome,
                    f"{result.score:g}/{result.max_score:g}",
                    f"{result.duration_s:.2f}",
                    "" if ok else "UNEXPECTED",
                )
            )
    header = ("task", "example", "outcome", "score", "seconds", "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(
        f"\n{len(rows)} example answers graded on the {backend.name} backend; {surprises} unexpected"
    )
    return 1 if surprises else 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the API (migrates the database and loads the task bank first)."""
    import uvicorn

    from api.main import create_app
    from api.server import LingeringHttpProtocol, serve

    where = {
        "host": args.host or settings.api_host,
        "port": args.port or settings.api_port,
        # Longer than a client keeps a pooled connection idle, so a reused connection is
        # not closed under a request in flight (the client would see it dropped).
        "timeout_keep_alive": 30,
    }
    if args.workers > 1:
        # Processes of their own, each with its own socket on the port; each imports the app
        # by name and reads the same environment.
        host, port = where.pop("host"), where.pop("port")
        return serve(host, port, args.workers, log_level="info", **where)
    uvicorn.run(create_app(settings), log_level="info", http=LingeringHttpProtocol, **where)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a Celery worker on the given queues: `--concurrency` grading processes (default:
    one per core, so that one answer looping for its whole time limit holds no other), and
    the reaper on a timer in its main process (worker/reaper.py)."""
    from usecases.startup import prepare
    from worker.celery_app import app, context

    prepare(context)
    worker = app.Worker(
        queues=args.queues, concurrency=args.concurrency or os.cpu_count() or 1, pool_cls="prefork",
        loglevel="INFO", without_gossip=True, without_mingle=True, without_heartbeat=True,
    )  # fmt: skip
    worker.start()
    return worker.exitcode or 0  # a worker that stopped on an error exits with it


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from db.session import migrate
    from usecases import keys
    from usecases.unit_of_work import Context

    ctx = Context.of(settings)
    migrate(settings.effective_database_url)
    if args.action == "create":
        row, plaintext = keys.create_key(
            ctx, name=args.name, role=args.role, course=args.course, student_id=args.student
        )
        print(
            json.dumps(
                {
                    "id": row.id,
                    "key": plaintext,
                    "role": row.role,
                    "course": row.course,
                    "student_id": row.student_id,
                    "webhook_secret": row.webhook_secret,
                },
                indent=2,
            )
        )
    elif args.action == "list":
        for row in keys.list_keys(ctx):
            state = "revoked" if row.revoked_at else "active"
            print(
                f"{row.id}  {row.prefix}...  {row.role:10} {row.course or '*':12} {row.student_id or '':12} {state:8} {row.name}"
            )
    else:
        keys.revoke_key(ctx, args.id)
        print(f"revoked {args.id}")
    return 0


def cmd_link(args: argparse.Namespace, settings: Settings) -> int:
    """Print a learner's one-time link into the pages (the URL on stdout, its expiry on stderr)."""
    from db.session import migrate
    from usecases import links
    from usecases.unit_of_work import Context

    migrate(settings.effective_database_url)
    link = links.operator_link(
        Context.of(settings), args.course, args.student, args.task or None, args.expires_in_s
    )
    print(link["url"])
    print(f"expires at {link['expires_at']}", file=sys.stderr)
    return 0


def cmd_lti(args: argparse.Namespace, settings: Settings) -> int:
    """Register, list and remove LTI platforms, rotate the tool's key (as the operator)."""
    from db.models import Role
    from db.session import migrate
    from services.keys import Principal
    from usecases import lti_platforms
    from usecases.unit_of_work import Context

    migrate(settings.effective_database_url)
    ctx, operator = Context.of(settings), Principal("", Role.ADMIN, None, None, "")
    if args.action == "add-platform":
        done = lti_platforms.add_platform(
            ctx, operator, issuer=args.issuer, client_id=args.client_id,
            deployment_ids=args.deployment_id, auth_login_url=args.auth_login_url,
            auth_token_url=args.auth_token_url, key_set_url=args.key_set_url,
        )  # fmt: skip
        print(json.dumps(done, indent=2))
    elif args.action == "list-platforms":
        for p in lti_platforms.list_platforms(ctx, operator):
            print(f"{p['id']}  {p['issuer']}  {p['client_id']}  {','.join(p['deployment_ids'])}")
    elif args.action == "remove-platform":
        lti_platforms.remove_platform(ctx, operator, args.id)
        print(f"removed {args.id}")
    else:
        print(json.dumps(lti_platforms.rotate_key(ctx, operator)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradectl", description="Grade PyTorch answers by behaviour."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the grader does")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the bundled tasks").set_defaults(func=cmd_tasks)
    p = sub.add_parser("schema", help="print the spec JSON Schema")
    p.add_argument(
        "--reasons", action="store_true", help="list what each check type's triggers can name"
    )
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("validate", help="self-test specs in the sandbox")
    p.add_argument("specs", nargs="*", help="spec files (YAML or JSON)")
    p.add_argument("--all", action="store_true", help="every bundled task")
    p.add_argument(
        "--fresh", action="store_true", help="recompute even if this version passed before"
    )
    p.add_argument("--backend", choices=["auto", "docker", "process"])
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("grade", help="grade one answer")
    p.add_argument("task", help="task id, e.g. finetune-freeze")
    p.add_argument("file", nargs="?", help="answer file ('-' for stdin)")
    p.add_argument("--blanks", help='blank fills as JSON, e.g. {"1": "C"} or {"1": "True"}')
    p.add_argument("--choice", help="the option letter, for a multiple-choice task")
    p.add_argument("--json", action="store_true", help="print the result object as JSON")
    p.add_argument("--backend", choices=["auto", "docker", "process"])
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("examples", help="grade every bundled example answer and print a table")
    p.add_argument("--backend", choices=["auto", "docker", "process"])
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("serve", help="run the REST API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int, default=1, help="API processes (each with a thread pool)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a grading worker")
    p.add_argument("--queues", default="cpu,webhooks", help="comma-separated: cpu, gpu, webhooks")
    p.add_argument("--concurrency", type=int, help="grading processes (default: one per core)")
    # Every worker runs the reaper now; the flag is accepted for command lines that name it.
    p.add_argument("--beat", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("keys", help="create, list or revoke API keys")
    ksub = p.add_subparsers(dest="action", required=True)
    c = ksub.add_parser("create")
    c.add_argument("--role", required=True, choices=["admin", "instructor", "lms", "student"])
    c.add_argument("--course")
    c.add_argument("--student", help="the student's id, for a student key")
    c.add_argument("--name", default="")
    ksub.add_parser("list")
    r = ksub.add_parser("revoke")
    r.add_argument("id")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("link", help="print a learner's one-time link into the pages")
    p.add_argument("--course", required=True)
    p.add_argument("--student", required=True, help="the learner's id in the course")
    p.add_argument("--task", action="append", help="a task of their set (repeat; default: all)")
    p.add_argument("--expires-in-s", type=int, help="how long the link works (seconds)")
    p.set_defaults(func=cmd_link)

    p = sub.add_parser("lti", help="LTI 1.3 platforms and the tool's key")
    lsub = p.add_subparsers(dest="action", required=True)
    a = lsub.add_parser("add-platform", help="register a platform (an LMS)")
    a.add_argument("--issuer", required=True, help="the platform's iss")
    a.add_argument("--client-id", required=True, help="this tool's client id there")
    a.add_argument("--deployment-id", required=True, action="append", help="repeat for several")
    a.add_argument("--auth-login-url", required=True, help="its OIDC authorisation endpoint")
    a.add_argument("--auth-token-url", required=True, help="its OAuth 2 token endpoint")
    a.add_argument("--key-set-url", required=True, help="its JWKS")
    lsub.add_parser("list-platforms")
    r = lsub.add_parser("remove-platform")
    r.add_argument("id")
    lsub.add_parser("rotate-key", help="a new signing key (the old one published a while)")
    p.set_defaults(func=cmd_lti)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    settings = get_settings()
    try:
        return args.func(args, settings)
    except (GraderError, SandboxError, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
