"""The instructor's desk in the browser: signing in with an instructor key, a broken spec
told its problem beside the field it names, the fixed one followed until it is ready, a
learner's submission found by a filter, read with its code, regraded, and the best scores
downloaded; a learner's session refused at the desk; and what a learner wrote or is called
kept inert there, as on their own attempt's page."""

from __future__ import annotations

import csv
import io
import re
import uuid

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

from core.settings import PROJECT_ROOT
from tests.browser.conftest import READY_TIMEOUT_S
from tests.e2e.conftest import GRADE_WAIT_S, Key, auth, post_spec, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres]

GRADED = re.compile(r"Graded: ([a-z ]+), score ([\d.]+) of ([\d.]+)$")
CORRECT = "model.requires_grad_(False)\n"
# A new task's self-test waits behind the bank's (background work, first come first served),
# which a fresh checkout, or a changed grader, runs first: its wait covers theirs too.
POSTED_READY_TIMEOUT_S = 2 * READY_TIMEOUT_S
HOSTILE_ID = '<img src=x onerror=alert("desk")>'
PAYLOAD = '<script>window.pwned = "script"</script><img src=x onerror="window.pwned = 1">'
FORMULA_ID = '=HYPERLINK("http://127.0.0.1/","x")'


def freeze_spec(task_id: str) -> dict:
    """The bundled freeze task under a new id, without its known-wrong answers (a short
    self-test) and with a time limit a loaded machine's sandbox keeps to."""
    spec = yaml.safe_load((PROJECT_ROOT / "taskbank/tasks/finetune-freeze.yaml").read_text())
    return spec | {
        "id": task_id, "title": f"Freeze every layer ({task_id})", "known_wrong": [],
        "limits": {"time_limit_s": 60},
    }  # fmt: skip


def submit(client: httpx.Client, lms: Key, task_id: str, student_id: str, code: str) -> str:
    sent = client.post(
        "/v1/submissions", json={"task_id": task_id, "student_id": student_id, "code": code},
        headers=auth(lms),
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    return sent.json()["id"]


def graded(client: httpx.Client, lms: Key, submission_id: str) -> dict:
    return wait_for(
        client, f"/v1/submissions/{submission_id}", lms,
        lambda s: s["status"] == "completed", GRADE_WAIT_S,
    )  # fmt: skip


def task_state(page: Page):
    return page.locator(".task-state [role=status]")


def filter_by(page: Page, student: str, outcome: str = "") -> None:
    form = page.get_by_role("form", name="Filter the submissions")
    form.get_by_label("Student").fill(student)
    form.get_by_label("Outcome").select_option(outcome)
    with page.expect_navigation():
        form.get_by_role("button", name="Filter").click()


@pytest.fixture(scope="module")
def code_task(client: httpx.Client, instructor: Key, ready) -> str:
    """A code task of the course, posted over the API and ready."""
    task_id = f"desk-api-{uuid.uuid4().hex[:8]}"
    posted = post_spec(client, instructor, yaml.safe_dump(freeze_spec(task_id), sort_keys=False))
    assert posted.status_code == 202, posted.text
    ready([task_id])
    return task_id


def test_an_instructor_posts_a_spec_fixes_it_and_works_through_a_submission(
    desk, client: httpx.Client, lms: Key
):
    page = desk()
    expect(page.get_by_role("heading", level=1)).to_have_text("Tasks of course-web")
    tasks = page.get_by_role("table", name="The course's tasks, and the shared bank's")
    expect(tasks.get_by_role("row", name=re.compile("finetune-freeze")).first).to_contain_text(
        "shared bank"
    )

    # a broken spec: the problem is told beside the field it names, the text kept
    task_id = f"desk-{uuid.uuid4().hex[:8]}"
    broken = yaml.safe_dump(freeze_spec(task_id) | {"difficulty": "impossible"}, sort_keys=False)
    spec_box = page.get_by_label("Spec (YAML or JSON)")
    spec_box.fill(broken)
    with page.expect_navigation():
        page.get_by_role("button", name="Post the spec").click()
    problems = page.get_by_role("alert")
    expect(problems).to_contain_text("The spec was not accepted")
    problem = problems.locator('li[data-field="difficulty"]')
    expect(problem.locator("code.field")).to_have_text("difficulty")
    expect(problem).to_contain_text("Input should be 'easy', 'medium' or 'hard'")
    expect(spec_box).to_have_attribute("aria-invalid", "true")
    assert "spec-problems" in spec_box.get_attribute("aria-describedby").split()
    assert spec_box.input_value() == broken

    # fixed, and sent as a file this time: the task's page follows its self-test
    fixed = yaml.safe_dump(freeze_spec(task_id), sort_keys=False).encode()
    page.get_by_label("Or upload a spec file").set_input_files(
        files=[{"name": f"{task_id}.yaml", "mimeType": "application/yaml", "buffer": fixed}]
    )
    with page.expect_navigation():
        page.get_by_role("button", name="Post the spec").click()
    assert page.url.endswith(f"/teach/tasks/{task_id}")
    expect(task_state(page)).to_have_text(
        re.compile(r"^Ready: the self-test passed"), timeout=POSTED_READY_TIMEOUT_S * 1000
    )  # followed by the page's script: no reload
    expect(page.get_by_label(f"Self-test report of {task_id}")).to_contain_text("ok")
    page.goto("/teach")
    expect(tasks.get_by_role("row", name=re.compile(task_id))).to_contain_text("this course")
    expect(tasks.get_by_role("row", name=re.compile(task_id))).to_contain_text("Ready")

    # a learner's answer (sent by the LMS), found by the filter
    me = f"learner-{uuid.uuid4().hex[:8]}"
    submission_id = submit(client, lms, task_id, me, CORRECT)
    stored = graded(client, lms, submission_id)
    assert stored["outcome"] == "passed"
    page.goto(f"/teach/tasks/{task_id}")
    filter_by(page, me, "passed")
    assert f"student={me}" in page.url and "outcome=passed" in page.url
    listed = page.get_by_role("table", name=re.compile("submission"))
    expect(listed.get_by_role("row")).to_have_count(2)  # the header and the one answer
    row = listed.get_by_role("row").nth(1)
    expect(row).to_contain_text(me)
    expect(row).to_contain_text(f"{stored['score']:g} of {stored['max_score']:g}")
    expect(row).to_contain_text("passed")
    filter_by(page, me, "failed")
    expect(page.get_by_text("No submissions match the filter.")).to_be_visible()
    expect(page.get_by_role("figure")).to_contain_text("Best scores of 1 learner")

    # its page: the code and the full result; regraded, and followed until graded again
    filter_by(page, me)
    page.get_by_role("link", name="Attempt 1").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Attempt 1 at {task_id}")
    expect(page.get_by_label("Submitted code")).to_have_text(CORRECT)
    expect(page.locator("#result ul.checks li").first).to_contain_text("Passed")
    with page.expect_navigation():
        page.get_by_role("button", name="Regrade this submission").click()
    expect(page.locator("#live-status")).to_have_text(GRADED, timeout=GRADE_WAIT_S * 1000)
    assert GRADED.search(page.locator("#live-status").inner_text()).group(1) == "passed"
    expect(page.locator("#result ul.checks li").first).to_contain_text("Passed")

    # the best scores as a file, then every answer of the version again
    page.goto(f"/teach/tasks/{task_id}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download each learner's best score (CSV)").click()
    assert download.value.suggested_filename == f"{task_id}-best-scores.csv"
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert [(r["student_id"], float(r["best_score"]), r["attempts"]) for r in rows] == [
        (me, stored["score"], "1")
    ]
    exported = page.request.get(f"/teach/tasks/{task_id}/best-scores.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    with page.expect_navigation():
        page.get_by_role("button", name="Regrade all 1 submission graded by version 1").click()
    expect(page.get_by_text("1 submission sent to be graded again.")).to_be_visible()
    assert graded(client, lms, submission_id)["outcome"] == "passed"


def test_a_learners_session_gets_403_at_the_desk(learner, lms: Key, page: Page):
    page = learner(f"learner-{uuid.uuid4().hex[:8]}", [])
    expect(page.get_by_role("heading", level=1)).to_have_text("Practice set")
    session = next(c for c in page.context.cookies() if c["name"] == "grader_session")
    assert session["path"] == "/learn" and session["httpOnly"]
    # the learner's cookie never goes to /teach; sent there anyway, under either name:
    for name in ("grader_session", "grader_staff_session"):
        page.context.add_cookies([{**session, "name": name, "path": "/teach"}])
        response = page.goto("/teach")
        assert response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Not yours to see")
        expect(page.get_by_text("the desk is for a course's instructors")).to_be_visible()
        page.context.clear_cookies(name=name, path="/teach")
    # nor does the key that made the learner's link sign in
    page.goto("/teach/sign-in")
    page.get_by_label("Instructor API key").fill(lms.key)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not lms")
    assert page.get_by_label("Instructor API key").get_attribute("aria-invalid") == "true"
    assert page.request.get("/teach", max_redirects=0).status == 303  # to the sign-in form


def test_what_a_learner_wrote_and_is_called_stays_inert_at_the_desk(
    learner, desk, code_task: str, client: httpx.Client, lms: Key
):
    page = learner(HOSTILE_ID, [code_task])
    page.get_by_role("link", name=f"Freeze every layer ({code_task})").click()
    code = f"print({PAYLOAD!r})\nraise ValueError({PAYLOAD!r})\n"
    page.get_by_label("Your code").fill(code)
    with page.expect_navigation():
        page.get_by_role("form", name="Write the code").get_by_role("button", name="Submit").click()
    expect(page.get_by_role("status")).to_have_text(GRADED, timeout=GRADE_WAIT_S * 1000)

    # the learner's own attempt page shows what they sent, as text
    page.get_by_role("table", name="Your attempts").get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Your answer")).to_be_visible()
    expect(page.get_by_label("Submitted code")).to_have_text(code)
    assert page.locator(".answer script, .answer img").count() == 0

    formula = submit(client, lms, code_task, FORMULA_ID, "pass\n")
    graded(client, lms, formula)
    page = desk()
    page.goto(f"/teach/tasks/{code_task}")
    filter_by(page, HOSTILE_ID)
    listed = page.get_by_role("table", name=re.compile("submission"))
    expect(listed.locator("td.student")).to_have_text([HOSTILE_ID])
    listed.get_by_role("link", name="Attempt 1").click()
    expect(page.locator("dd.student")).to_have_text(HOSTILE_ID)
    expect(page.get_by_label("Submitted code")).to_have_text(code)
    expect(page.get_by_label("Output", exact=True)).to_contain_text(PAYLOAD)
    expect(page.get_by_label("Traceback")).to_contain_text("ValueError")
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img, main script").count() == 0

    exported = page.request.get(f"/teach/tasks/{code_task}/best-scores.csv")
    rows = {r["student_id"]: r for r in csv.DictReader(io.StringIO(exported.text()))}
    assert set(rows) == {HOSTILE_ID, "'" + FORMULA_ID}  # a formula's cell made text
