"""The tool against an LMS nobody here wrote: `lti1p3platform` 0.1.8 (its registration,
OIDC login, launch, deep-linking validation, client-credentials token and AGS handlers) on
127.0.0.1, and a person in Debian's Chromium (Playwright): staff deep-link a task, a
learner launches it and answers twice (a worse, then a better answer), and the platform's
AGS endpoint receives the scores under the best-score policy, once per change; a new launch
by the same learner resumes their attempts. The service runs as a user runs it (`gradectl
serve` and `gradectl worker` on PostgreSQL and a Redis server of the test's own).

What lti1p3platform leaves to its user, and this test therefore provides: the line items'
and scores' storage (its AGS service is abstract), the pages that start a launch, the form
that posts the id_token (its FastAPI integration imports `pkg_resources`, which current
setuptools no longer ships, so its abstract launch is subclassed here), and the rules it
does not check. It verifies the client assertion's signature against the tool's
key set but neither its audience, its lifetime nor its `jti` (`verify_aud` off), takes any
score body (`# TODO: validate score`), and checks of the OIDC answer only that nonce, state
and redirect URI are present: the tests' `Platform` rules (tests/lti/conftest.py) are
applied to every token and score request as well. It has no Names and Roles membership
store either, so the roster is covered by tests/lti/test_passback.py only."""

from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from lti1p3platform.framework.fastapi.oidc_login import FastAPIOIDCLogin
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request as PlatformRequest
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService

from core.settings import PROJECT_ROOT
from tests.conftest import gradectl, require_or_skip
from tests.e2e.conftest import Process, fresh_database, start_api
from tests.lti.conftest import CLIENT_ID, DEPLOYMENT, INSTRUCTOR, LEARNER, Platform, rsa_key

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

ARTIFACTS = PROJECT_ROOT / "tests" / "browser" / "artifacts"  # git-ignored
TASK = "quiz-freeze-syntax"  # a question: graded without a sandbox
TITLE = "Freezing layers in PyTorch"
CONTEXT = "course-e2e"
WAIT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lms:
    """The platform's state: its key, the tool's links (from Deep Linking), line items and
    the scores it accepted; `rules` holds our requests to OAuth's and AGS's rules."""

    def __init__(self, url: str, tool_url: str) -> None:
        self.url, self.tool_url = url, tool_url
        self.pem, self.jwk = rsa_key()
        self.links: dict[str, dict] = {}  # resource link id -> the content item
        self.lineitems: list[dict] = []
        self.rules = Platform(url=url, pem=self.pem, jwk=self.jwk)
        self.hints: dict[str, dict] = {}

    @property
    def scores(self) -> list[dict]:
        return self.rules.scores


class Conf(LTI1P3PlatformConfAbstract):
    lms: Lms

    def init_platform_config(self, **kwargs) -> None:
        pass

    def get_registration_by_params(self, **kwargs) -> Registration:
        tool = self.lms.tool_url
        return (
            Registration()
            .set_iss(self.lms.url)
            .set_client_id(CLIENT_ID)
            .set_deployment_id(DEPLOYMENT)
            .set_oidc_login_url(f"{tool}/lti/login")
            .set_launch_url(f"{tool}/lti/launch")
            .set_deeplink_launch_url(f"{tool}/lti/launch")
            .set_tool_key_set_url(f"{tool}/lti/jwks")
            .set_platform_public_key(_public_pem(self.lms.pem))
            .set_platform_private_key(self.lms.pem)
        )


def _public_pem(private_pem: str) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Login(FastAPIOIDCLogin):
    def set_lti_message_hint(self, **kwargs) -> None:
        self._lti_message_hint = kwargs["hint"]


class Launch(LTIAdvantageMessageLaunchAbstract):
    """lti1p3platform's launch (its FastAPI integration imports `pkg_resources`, which
    setuptools no longer ships): the id_token and state auto-posted to the tool."""

    def get_preflight_response(self) -> dict:
        return dict(self._request.query_params)

    def render_launch_form(self, launch_data: dict, **kwargs) -> HTMLResponse:
        fields = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(launch_data[name])}">'
            for name in ("id_token", "state")
        )
        action = html.escape(launch_data["launch_url"])
        return HTMLResponse(
            f'<form id="f" method="post" action="{action}">{fields}</form>'
            '<script>document.getElementById("f").submit()</script>'
        )


class Metadata(PlatformRequest):
    def build_metadata(self, request: dict) -> dict:
        return request


class Ags(AssignmentsGradesService):
    lms: Lms

    def find_lineitems(self, page=1, limit=None, line_item_id=None, resource_link_id=None,
                       resource_id=None, tag=None):  # fmt: skip
        items = [
            i for i in self.lms.lineitems
            if (resource_id is None or i.get("resourceId") == resource_id)
            and (resource_link_id is None or i.get("resourceLinkId") == resource_link_id)
        ]  # fmt: skip
        return {"content": items, "has_next": False, "next": None}

    def find_lineitem(self, line_item_id: str) -> dict:
        return next(i for i in self.lms.lineitems if i["id"].endswith(f"/{line_item_id}"))

    def create_lineitem(self, creation_data: dict) -> dict:
        item = creation_data | {"id": f"{self.lms.url}/lineitems/{len(self.lms.lineitems) + 1}"}
        self.lms.lineitems.append(item)
        return item

    def update_lineitem(self, update_data: dict) -> dict:
        raise NotImplementedError

    def delete_lineitem(self, line_item_id: str) -> None:
        raise NotImplementedError

    def update_score(self, line_item_id: str, score: dict) -> UpdateScoreStatus:
        self.lms.scores.append({"lineitem": int(line_item_id), "body": score})
        return UpdateScoreStatus.SUCCESS

    def get_results(self, line_item_id, page=1, limit=None, user_id=None):
        return {"content": [], "has_next": False, "next": None}


def lms_app(lms: Lms) -> FastAPI:
    """The LMS: pages that start launches, the OIDC authorisation endpoint, the deep-link
    return, the token endpoint and AGS, each handled by lti1p3platform."""
    app = FastAPI()
    conf_cls = type("BoundConf", (Conf,), {"lms": lms})
    ags_cls = type("BoundAgs", (Ags,), {"lms": lms})

    def conf() -> Conf:
        platform = conf_cls()
        platform.get_registration()
        return platform

    async def metadata(request: Request) -> Metadata:
        body = await request.body()
        kind = request.headers.get("content-type", "")
        form = dict(parse_qsl(body.decode())) if "form" in kind else {}
        return Metadata({
            "method": request.method, "form_data": form, "get_data": dict(request.query_params),
            "headers": request.headers, "content_type": kind, "path": request.url.path,
            "json": json.loads(body) if body and "json" in kind else None,
        })  # fmt: skip

    async def form_of(request: Request) -> dict[str, str]:
        return dict(parse_qsl((await request.body()).decode()))

    def answer(response) -> Response:
        if response.code >= 400:
            lms.rules.errors.append(f"{response.code} {response.message}")
        result = response.result
        if isinstance(result, dict) and "content" in result:
            result = result["content"]
        return JSONResponse(result, status_code=response.code, media_type=response.media_type)

    @app.get("/start")
    def start(request: Request, user: str, role: str, link: str = "") -> Response:
        hint = uuid.uuid4().hex
        lms.hints[hint] = {"user": user, "role": role, "link": link}
        login = Login(request, conf())
        login.set_lti_message_hint(hint=hint)
        return login.initiate_login(user)

    @app.get("/jwks")
    def jwks() -> dict:
        return conf().get_jwks()

    @app.api_route("/auth", methods=["GET", "POST"])
    def auth(request: Request) -> Response:
        hint = lms.hints[request.query_params["lti_message_hint"]]
        launch = Launch(request, conf())
        launch.set_user_data(hint["user"], [hint["role"]], full_name=hint["user"].title())
        launch.set_launch_context_claim(CONTEXT, context_title="Fine-tuning, end to end")
        if hint["link"]:
            item = lms.links[hint["link"]]
            launch.set_resource_link_claim(hint["link"], title=item["title"])
            launch.set_custom_parameters_claim(item.get("custom", {}))
            launch.set_ags(f"{lms.url}/lineitems", item.get("lineitem_url"))
        else:
            launch.set_dl(f"{lms.url}/deep-link-return", title="Add an activity")
        return launch.lti_launch()

    @app.post("/deep-link-return")
    async def deep_link_return(request: Request) -> Response:
        form = await form_of(request)
        items = conf().validate_deeplinking_resp({"JWT": form["JWT"]})
        for item in items:  # the LMS makes the link and its gradebook column
            link = f"rl-{len(lms.links) + 1}"
            line = item.get("lineItem")
            if line:
                made = {
                    **line,
                    "resourceLinkId": link,
                    "id": f"{lms.url}/lineitems/{len(lms.lineitems) + 1}",
                }
                lms.lineitems.append(made)
                item = item | {"lineitem_url": made["id"]}
            lms.links[link] = item
        return HTMLResponse(f"<h1>Added {len(items)} activities</h1>")

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = await form_of(request)
        why = lms.rules.check_token_request(form)
        if why:
            lms.rules.errors.append(why)
            return JSONResponse({"error": "invalid_client", "error_description": why}, 400)
        return JSONResponse(conf().get_access_token(form))

    @app.get("/lineitems")
    async def lineitems(request: Request) -> Response:
        ags = ags_cls(await metadata(request), conf(), f"{lms.url}/lineitems")
        return answer(ags.handle_resp(ags.handle_get_lineitems))

    @app.post("/lineitems")
    async def create(request: Request) -> Response:
        ags = ags_cls(await metadata(request), conf(), f"{lms.url}/lineitems")
        return answer(ags.handle_resp(ags.handle_create_lineitem))

    @app.post("/lineitems/{number}/scores")
    async def score(number: str, request: Request) -> Response:
        meta = await metadata(request)
        why = lms.rules.check_score(request.headers, meta.json or {})
        if why:
            lms.rules.errors.append(why)
            return JSONResponse({"error": why}, 400)
        ags = ags_cls(meta, conf(), f"{lms.url}/lineitems", f"{lms.url}/lineitems/{number}")
        return answer(ags.handle_resp(ags.handle_update_score, line_item_id=number))

    return app


@contextlib.contextmanager
def own_redis() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, chromium) -> Iterator[dict]:
    """The service (API and worker) with one question for its task bank, and the LMS."""
    require_or_skip(shutil.which("redis-server") is not None, "redis-server")
    tasks = tmp_path_factory.mktemp("tasks")
    (tasks / f"{TASK}.yaml").write_bytes(
        (PROJECT_ROOT / "taskbank" / "tasks" / f"{TASK}.yaml").read_bytes()
    )
    logs = tmp_path_factory.mktemp("lti-logs")
    with fresh_database("grader_lti") as database_url, own_redis() as redis_url:
        env = {
            "GRADER_TASKS_DIR": str(tasks), "GRADER_DATABASE_URL": database_url,
            "GRADER_REDIS_URL": redis_url, "GRADER_SANDBOX_BACKEND": "process",
            "GRADER_DATA_DIR": str(PROJECT_ROOT / "var"), "GRADER_LTI_PASSBACK_BACKOFF_S": "0.5",
        }  # fmt: skip
        api, tool_url = start_api(env, logs, "lti-api")
        argv = [sys.executable, "-m", "cli.gradectl", "worker", "--queues", "cpu,webhooks"]
        worker = Process("lti-worker", [*argv, "--concurrency", "1"], env, logs)
        lms_port = free_port()
        lms = Lms(f"http://127.0.0.1:{lms_port}", tool_url)
        server = uvicorn.Server(
            uvicorn.Config(lms_app(lms), host="127.0.0.1", port=lms_port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.05)
            done = gradectl(
                "lti", "add-platform", "--issuer", lms.url, "--client-id", CLIENT_ID,
                "--deployment-id", DEPLOYMENT, "--auth-login-url", f"{lms.url}/auth",
                "--auth-token-url", f"{lms.url}/token", "--key-set-url", f"{lms.url}/jwks",
                env=env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr.decode()
            lms.rules.tool_jwks = httpx.get(f"{tool_url}/lti/jwks").json()
            yield {"lms": lms, "tool": tool_url, "worker": worker, "env": env}
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            worker.stop(grace_s=20.0)
            api.stop()


def wait_until(what, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.25)
    return what()


def test_staff_deep_link_a_task_and_a_learners_best_score_reaches_the_lms(stack, browser):
    from playwright.sync_api import expect

    lms: Lms = stack["lms"]
    staff = browser.new_context().new_page()
    staff.goto(f"{lms.url}/start?" + urlencode({"user": "teacher", "role": INSTRUCTOR}))
    expect(staff.get_by_role("heading", level=1)).to_have_text("Add tasks to the course")
    staff.get_by_role("checkbox", name=re.compile(TITLE)).check()
    staff.get_by_role("button", name="Add to the course").click()
    expect(staff.get_by_role("heading", level=1)).to_have_text("Added 1 activities")
    [(link, item)] = lms.links.items()
    assert item["custom"] == {"task_id": TASK} and item["lineItem"]["resourceId"] == TASK

    learner = browser.new_context().new_page()
    start = f"{lms.url}/start?" + urlencode({"user": "ann", "role": LEARNER, "link": link})
    learner.goto(start)
    expect(learner.get_by_role("heading", level=1)).to_have_text(TITLE)
    for sent, letter in enumerate(("B", "A")):  # a wrong answer, then the right one
        learner.get_by_role("radio", name=re.compile(rf"^{letter}\. ")).check()
        with learner.expect_navigation():
            learner.get_by_role("button", name="Submit").click()
        expect(learner.get_by_role("status")).to_contain_text("Graded", timeout=WAIT_S * 1000)
        # each score reaches the LMS before the next answer
        assert wait_until(lambda sent=sent: len(lms.scores) > sent), stack["worker"].log_tail()
    ARTIFACTS.mkdir(exist_ok=True)
    learner.screenshot(path=str(ARTIFACTS / "lti-learner.png"), full_page=True)

    assert wait_until(lambda: len(lms.scores) >= 2), stack["worker"].log_tail()
    bodies = [s["body"] for s in lms.scores]
    assert [(b["scoreGiven"], b["scoreMaximum"]) for b in bodies] == [(0, 1), (1, 1)]
    assert {b["userId"] for b in bodies} == {"ann"}
    assert {s["lineitem"] for s in lms.scores} == {1} and len(lms.lineitems) == 1
    assert lms.rules.errors == []

    learner.goto(start)  # a new launch resumes the learner's attempts
    expect(learner.get_by_role("table", name="Your attempts").get_by_role("row")).to_have_count(3)
    time.sleep(2)
    assert len(lms.scores) == 2  # nothing changed: nothing more sent
