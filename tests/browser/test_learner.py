"""A learner in the browser: the seed set done in the page (the code tasks through their
blanks, one also written out, the questions), each score as the API has it; a wrong answer
told its mistake; attempts running out; and what a learner wrote, printed or is named kept
inert, and their attempts kept from others."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
import yaml
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from core.settings import PROJECT_ROOT
from taskbank import SEED_CODE_TASKS as CODE_TASKS
from taskbank import SEED_QUESTIONS as QUESTIONS
from taskbank import SEED_SET
from tests.browser.conftest import ARTIFACTS
from tests.e2e.conftest import Key, auth

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.redis, pytest.mark.postgres]

GRADED = re.compile(r"Graded: ([a-z ]+), score ([\d.]+) of ([\d.]+)$")  # also a JS regex
GRADING_TIMEOUT_MS = 90_000
EXAMPLES = PROJECT_ROOT / "taskbank" / "examples"
HOSTILE_ID = '<img src=x onerror=alert("id")>'


def student() -> str:
    return f"learner-{uuid.uuid4().hex[:8]}"


def spec(task_id: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "taskbank" / "tasks" / f"{task_id}.yaml").read_text())


def right_blanks(task_id: str) -> dict[str, str]:
    return json.loads(next((EXAMPLES / task_id).glob("template_*.blanks.json")).read_text())


def open_task(page: Page, title: str) -> None:
    page.get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)


def graded(page: Page) -> dict:
    """Wait for the live status to say the outcome and score; what it says."""
    status = page.get_by_role("status")
    expect(status).to_have_text(GRADED, timeout=GRADING_TIMEOUT_MS)
    outcome, score, max_score = GRADED.search(status.inner_text()).groups()
    return {"outcome": outcome, "score": float(score), "max": float(max_score)}


def latest(client: httpx.Client, lms: Key, task_id: str, student_id: str) -> dict:
    listed = client.get(
        "/v1/submissions", params={"task_id": task_id, "student_id": student_id}, headers=auth(lms)
    )
    assert listed.status_code == 200, listed.text
    return listed.json()[0]


def choose(page: Page, letter: str) -> None:
    page.get_by_role("radio", name=re.compile(rf"^{letter}\. ")).check()


def send(page: Page, form: str | None = None) -> None:
    """Press the form's Submit button, and wait for the page that follows the answer."""
    scope = page.get_by_role("form", name=form) if form else page
    with page.expect_navigation():
        scope.get_by_role("button", name="Submit").click()


def fill_blanks(page: Page, blanks: dict[str, str]) -> None:
    form = page.get_by_role("form", name="Fill the blanks")
    for number, letter in blanks.items():
        form.get_by_label(f"Blank {number}", exact=True).select_option(letter)
    send(page, "Fill the blanks")


def assert_as_the_api_has_it(shown: dict, client, lms, task_id: str, student_id: str) -> dict:
    stored = latest(client, lms, task_id, student_id)
    assert stored["status"] == "completed"
    assert (shown["score"], shown["max"]) == (stored["score"], stored["max_score"])
    assert shown["outcome"] == stored["outcome"].replace("_", " ")
    return stored


def test_a_learner_does_the_seed_set_and_sees_the_apis_scores(learner, client, lms):
    me = student()
    page = learner(me, list(SEED_SET))
    expect(page.get_by_role("heading", name="Practice - 5 tasks")).to_be_visible()
    listed = page.get_by_role("region", name="Practice - 5 tasks").get_by_role("link")
    assert listed.all_inner_texts() == [spec(t)["title"] for t in CODE_TASKS]
    for task_id in CODE_TASKS:
        page.goto("/learn")
        open_task(page, spec(task_id)["title"])
        expect(page.get_by_text("Attempts: 3 left")).to_be_visible()
        fill_blanks(page, right_blanks(task_id))
        shown = graded(page)
        assert shown["outcome"] == "passed" and shown["score"] == shown["max"]
        assert_as_the_api_has_it(shown, client, lms, task_id, me)
        checks = page.locator("#result ul.checks li")
        expect(checks.first).to_contain_text("Passed")
        expect(page.get_by_text("Attempts: 2 left")).to_be_visible()

    # one task again, its answer written out in the editor (Tab indents there)
    page.goto("/learn")
    open_task(page, spec("finetune-freeze")["title"])
    editor = page.get_by_label("Your code")
    editor.fill("for param in model.parameters():\n")
    editor.press("End")
    editor.press("Tab")
    editor.press_sequentially("param.requires_grad = False\n")
    assert (
        editor.input_value()
        == "for param in model.parameters():\n    param.requires_grad = False\n"
    )
    send(page, "Write the code")
    shown = graded(page)
    assert shown["outcome"] == "passed"
    assert_as_the_api_has_it(shown, client, lms, "finetune-freeze", me)
    expect(page.get_by_role("table", name="Your attempts").get_by_role("row")).to_have_count(3)

    for task_id in QUESTIONS:
        page.goto("/learn")
        question = spec(task_id)
        open_task(page, question["title"])
        choose(page, question["answer"])
        send(page)
        shown = graded(page)
        assert shown["outcome"] == "passed"
        assert_as_the_api_has_it(shown, client, lms, task_id, me)
        expect(page.get_by_text("Right answer.")).to_be_visible()
        explanation = " ".join(question["explanation"].split())
        expect(page.locator("#result ul.feedback")).to_contain_text(explanation[:60])

    page.goto("/learn")
    expect(page.get_by_text("10 of 10 solved")).to_be_visible()


def test_a_wrong_answer_is_told_its_mistake(learner, client, lms):
    me = student()
    page = learner(me, ["finetune-load-pretrained"])
    open_task(page, spec("finetune-load-pretrained")["title"])
    page.get_by_text("Hint", exact=True).click()
    expect(page.get_by_text(spec("finetune-load-pretrained")["hint"])).to_be_visible()
    fill_blanks(page, {"1": "B"})  # pretrained=False
    shown = graded(page)
    assert shown["outcome"] == "failed" and shown["score"] < shown["max"]
    stored = assert_as_the_api_has_it(shown, client, lms, "finetune-load-pretrained", me)
    assert "random-weights" in stored["result"]["mistakes"]
    feedback = page.locator("#result ul.feedback")
    expect(feedback).to_contain_text("Using pretrained=False will initialize random weights")
    expect(page.locator("#result ul.checks li.failed").first).to_contain_text("Failed")
    # The task page after a graded answer, as the README shows it (docs/images/).
    page.screenshot(path=ARTIFACTS / "task-page-after-a-graded-answer.png", full_page=True)
    page.goto("/learn")
    best = f"best score {shown['score']:g} of {shown['max']:g} · 2 attempts left"
    expect(page.get_by_text(best, exact=True)).to_be_visible()


def test_when_the_attempts_are_used_up_the_form_says_so_and_is_disabled(learner):
    page = learner(student(), ["quiz-freeze-syntax"])
    question = spec("quiz-freeze-syntax")
    open_task(page, question["title"])
    for left in (2, 1, 0):
        choose(page, "C")
        send(page)
        assert graded(page)["outcome"] == "failed"
        expect(page.get_by_text("Not the right answer.")).to_be_visible()
        expect(
            page.get_by_text(f"Attempts: {left} left" if left else "Attempts: none left")
        ).to_be_visible()
    expect(page.get_by_text("You have used all 3 attempts at this task.")).to_be_visible()
    expect(page.get_by_role("button", name="Submit")).to_be_disabled()
    expect(page.get_by_role("radio", name=re.compile(r"^A\. "))).to_be_disabled()


def test_what_a_learner_writes_prints_and_is_named_stays_inert(learner, client, lms, page):
    payload = '<script>window.pwned = "script"</script><img src=x onerror="window.pwned = 1">'
    page = learner(HOSTILE_ID, ["finetune-freeze"])
    expect(page.locator(".who .student")).to_have_text(HOSTILE_ID)
    open_task(page, spec("finetune-freeze")["title"])
    page.get_by_label("Your code").fill(
        f"print({payload!r})\nimport sys\nprint({payload!r}, file=sys.stderr)\n"
        f"raise ValueError({payload!r})\n"
    )
    send(page, "Write the code")
    assert graded(page)["outcome"] == "runtime error"
    expect(page.get_by_label("Output", exact=True)).to_contain_text(payload)
    expect(page.get_by_label("Traceback")).to_contain_text("ValueError")
    page.reload()  # the same, rendered with the page rather than put in place by the script
    expect(page.get_by_label("Error output")).to_contain_text(payload)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#result img, #result script, .who img").count() == 0

    theirs = latest(client, lms, "finetune-freeze", HOSTILE_ID)["id"]
    other = learner(student(), ["finetune-freeze"])
    for path in (f"/learn/submissions/{theirs}", f"/learn/submissions/{theirs}/status"):
        response = other.goto(path)
        assert response.status == 403
        assert "window.pwned" not in other.content()
    expect(other.get_by_role("heading", level=1)).to_have_text("Not yours to see")
    forged = other.request.post(
        "/learn/tasks/finetune-freeze", form={"answer": "code", "code": "pass"}
    )  # a form without the session's token: what a page elsewhere could send
    assert forged.status == 403


SERIOUS = ("serious", "critical")


def axe_violations(page: Page) -> list[str]:
    """What axe-core (the copy the axe-playwright-python package ships, no download) finds
    serious or critical on the page as it is now: one line each, with the elements."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]


def test_an_accessibility_scan_finds_nothing_serious_on_the_learners_pages(learner):
    task, question = "finetune-freeze", "quiz-freeze-syntax"
    page = learner(student(), [task, question])
    found = {"practice set": axe_violations(page)}
    open_task(page, spec(task)["title"])
    found["a code task"] = axe_violations(page)
    fill_blanks(page, right_blanks(task))
    graded(page)
    found["a code task, graded"] = axe_violations(page)
    page.get_by_role("link", name="Attempt 1", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    found["an attempt"] = axe_violations(page)
    page.goto("/learn")
    open_task(page, spec(question)["title"])
    found["a question"] = axe_violations(page)
    choose(page, "A")
    send(page)
    graded(page)
    found["a question, answered"] = axe_violations(page)
    assert not any(found.values()), json.dumps(found, indent=2)


def test_a_training_result_plots_the_loss_beside_a_correct_runs(learner, client, lms):
    """The loss per iteration drawn by the server (an SVG image with its name and
    description), put in place by the page's script once graded, the numbers the API's
    result holds in a table, and nothing serious for a screen reader."""
    task_id, me = "finetune-train-epoch", student()
    page = learner(me, [task_id])
    open_task(page, spec(task_id)["title"])
    fill_blanks(page, right_blanks(task_id))
    assert graded(page)["outcome"] == "passed"
    plot = page.get_by_role(
        "img", name="The loss at each iteration of your loop beside a correct run's"
    )
    expect(plot).to_be_visible()
    curve = latest(client, lms, task_id, me)["result"]["loss_curve"]
    assert len(curve["answer"]) == len(curve["reference"]) == 8
    expect(plot).to_have_accessible_description(
        re.compile(r"^Your loop's loss over 8 iterations, from ")
    )
    page.get_by_text("The loss at each iteration, as numbers").click()
    rows = page.get_by_role("table", name="Loss per iteration").get_by_role("row")
    expect(rows).to_have_count(9)
    expect(rows.nth(1)).to_have_text(
        re.compile(rf"^\s*1\s*{curve['answer'][0]:.4g}\s*{curve['reference'][0]:.4g}\s*$")
    )
    assert axe_violations(page) == []
