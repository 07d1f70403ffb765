"""The pages in a real browser: Debian's Chromium, headless, driven by Playwright against
the service as it runs (the API and a Celery worker grading in the Docker sandbox, from
tests/e2e/conftest.py) with the seed practice set for its task bank. Each test leaves a
screenshot in tests/browser/artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from core.settings import PROJECT_ROOT
from taskbank import SEED_SET
from tests.e2e.conftest import (  # noqa: F401  (fixtures)
    Key,
    admin_key,
    api_url,
    auth,
    database_url,
    empty_redis_db,
    log_dir,
    make_key,
    service_env,
    stack_redis_url,
    wait_for,
    worker,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
COURSE = "course-web"
READY_TIMEOUT_S = 600  # a fresh checkout self-tests the set first; later runs read the cache


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis DB of this stack's own: the e2e tests' stack may run in the same process."""
    with empty_redis_db(stack_redis_url(12)) as url:
        yield url


@pytest.fixture(scope="session")
def tasks_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's practice set, and nothing else, as the service's task bank."""
    folder = tmp_path_factory.mktemp("tasks")
    for task_id in SEED_SET:
        shutil.copy(PROJECT_ROOT / "taskbank" / "tasks" / f"{task_id}.yaml", folder)
    return folder


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict, api_url: str) -> dict:  # noqa: F811
    return {**browser_context_args, "base_url": api_url}


@pytest.fixture(autouse=True)
def screenshot(chromium: Path, page: Page, request: pytest.FixtureRequest) -> Iterator[None]:
    """The page as the test left it, for a person to look at."""
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
    assert dialogs == [], f"a script ran in the page: {dialogs}"


@pytest.fixture(scope="session")
def client(api_url: str) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=api_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def lms(make_key) -> Key:  # noqa: F811
    return make_key("lms", COURSE)


@pytest.fixture(scope="session")
def ready(client: httpx.Client, admin_key: str, worker) -> Callable[[list[str]], None]:  # noqa: F811
    """Wait until each task named has been self-tested: ready, else fail with its report."""
    known: set[str] = set()

    def wait(task_ids: list[str]) -> None:
        for task_id in set(task_ids) - known:
            task = wait_for(
                client, f"/v1/tasks/{task_id}", admin_key,
                lambda t: t["status"] != "validating", READY_TIMEOUT_S,
            )  # fmt: skip
            assert task["status"] == "ready", (
                f"{task_id} is {task['status']}:\n{task.get('report')}"
            )
            known.add(task_id)

    return wait


@pytest.fixture
def learner(client: httpx.Client, lms: Key, page: Page, ready) -> Callable[..., Page]:
    """Open a new learner's link (made by the LMS over the API) in the page, once the tasks
    of their set take answers."""

    def enter(student_id: str, task_ids: list[str]) -> Page:
        ready(task_ids)
        body = {"student_id": student_id} | ({"task_ids": task_ids} if task_ids else {})
        made = client.post("/v1/links", json=body, headers=auth(lms))
        assert made.status_code == 201, made.text
        page.goto(made.json()["url"])
        switch = page.get_by_role("button", name="Open the link")
        if switch.count():  # the browser is in another learner's session: it asks first
            with page.expect_navigation():
                switch.click()
        return page

    return enter


@pytest.fixture(scope="session")
def instructor(make_key) -> Key:  # noqa: F811
    return make_key("instructor", COURSE)


@pytest.fixture
def desk(instructor: Key, page: Page, worker) -> Callable[[], Page]:  # noqa: F811
    """Sign the page in to the instructor's desk with the course's instructor key, as a
    person does: the key pasted into the sign-in form."""

    def sign_in() -> Page:
        page.goto("/teach/sign-in")
        page.get_by_label("Instructor API key").fill(instructor.key)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        assert page.url.endswith("/teach"), page.url
        return page

    return sign_in
