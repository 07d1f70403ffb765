"""The state through the platform's storage frame, in Chromium: a course page of the test's
own (the LMS, at http://127.0.0.1:PORT) frames the tool (at http://localhost:PORT, another
site) beside a storage frame named `post_message_forwarding` that answers `lti.put_data` and
`lti.get_data` from the tool's origin only, as Canvas's does. In that cross-site frame the
browser keeps none of the tool's cookies (over plain http they are SameSite=Lax, which a
cross-site frame neither sets nor sends; the test checks the jar holds no state cookie), so
the state can only come back through the frame: the login's page puts its proof there, the
launch's page reads it back, and the learner enters their task through the new window the
launch's page offers. A storage frame that does not answer leaves the new window to the
login. The service runs in-process on the application tests' SQLite (no Redis, no worker:
nothing here is graded)."""

from __future__ import annotations

import html
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import uvicorn

from api.main import create_app
from tests.lti.conftest import CLIENT_ID, Handler, Platform, register, rsa_key

pytestmark = [pytest.mark.browser]

FRAME = "post_message_forwarding"
TITLE = "Which call freezes a model?"  # the `quiz` task of tests/lti/conftest.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lms(Handler):
    """The tests' platform, with the pages a browser meets: the course page (the storage
    frame, then the tool's frame starting its login), the storage frame, and the OIDC
    authorisation endpoint, which answers the tool's launch URL a signed id_token."""

    tool_url: str

    def _page(self, body: str) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/course":
            return self._course(query.get("silent") == "1")
        if parts.path == "/storage":
            return self._storage(query.get("silent") == "1")
        if parts.path == "/auth":
            return self._auth(query)
        return super().do_GET()

    def _course(self, silent: bool) -> None:
        login = f"{self.tool_url}/lti/login?" + urlencode({
            "iss": self.platform.issuer, "login_hint": "ann", "client_id": CLIENT_ID,
            "target_link_uri": f"{self.tool_url}/lti/launch", "lti_message_hint": "link-1",
            "lti_storage_target": FRAME,
        })  # fmt: skip
        self._page(
            "<!doctype html><title>Course</title><h1>Deep Learning 101</h1>"
            f'<iframe name="{FRAME}" src="/storage?silent={int(silent)}" hidden></iframe>'
            '<iframe name="tool" title="Activity" width="900" height="600"></iframe>'
            "<script>document.getElementsByName('" + FRAME + "')[0].addEventListener("
            f"'load', () => {{ document.getElementsByName('tool')[0].src = {json.dumps(login)}; }});"
            "</script>"
        )

    def _storage(self, silent: bool) -> None:
        """The platform's storage frame: values kept per key for the tool's origin alone,
        every answer sent back to that origin; `silent`, a frame that never answers."""
        self._page(
            "<!doctype html><script>"
            f"const TOOL = {json.dumps(self.tool_url)}, SILENT = {json.dumps(silent)};"
            "const kept = new Map(); window.handled = [];"
            "addEventListener('message', (event) => {"
            "  const d = event.data;"
            "  if (event.origin !== TOOL || typeof d !== 'object' || d === null) return;"
            "  if (d.subject !== 'lti.put_data' && d.subject !== 'lti.get_data') return;"
            "  window.handled.push(d.subject);"
            "  if (SILENT) return;"
            "  if (d.subject === 'lti.put_data') kept.set(d.key, d.value);"
            "  event.source.postMessage({subject: d.subject + '.response',"
            "    message_id: d.message_id, key: d.key, value: kept.get(d.key) ?? null},"
            "    event.origin);"
            "});</script>"
        )

    def _auth(self, query: dict[str, str]) -> None:
        """The authentication response: a form the page posts to the tool's redirect URI
        (the id_token, the state, and the storage frame's name, as the spec has it)."""
        if query.get("redirect_uri") != f"{self.tool_url}/lti/launch":
            return self._refuse(400, f"unregistered redirect_uri {query.get('redirect_uri')}")
        token = self.platform.id_token(query["nonce"], sub="ann", custom={"task_id": "quiz"})
        fields = {"id_token": token, "state": query["state"], "lti_storage_target": FRAME}
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        self._page(
            f'<form id="f" method="post" action="{html.escape(query["redirect_uri"])}">'
            f"{inputs}</form><script>document.getElementById('f').submit()</script>"
        )


@pytest.fixture
def stack(ctx, client, admin, chromium) -> Iterator[dict]:  # noqa: F811  (fixtures of conftest)
    tool_port = free_port()
    tool_url = f"http://localhost:{tool_port}"  # another site than 127.0.0.1
    pem, public = rsa_key()
    platform = Platform(pem=pem, jwk=public, published=[public])
    handler = type("BoundLms", (Lms,), {"platform": platform, "tool_url": tool_url})
    lms = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    platform.url = f"http://127.0.0.1:{lms.server_address[1]}"
    threading.Thread(target=lms.serve_forever, daemon=True).start()
    register(client, admin, platform)
    ctx.settings.frame_ancestors = platform.url  # the LMS may frame the tool
    app = create_app(ctx.settings, prepare_on_start=False)
    app.state.context = ctx
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=tool_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the tool did not start"
        yield {"platform": platform, "tool": tool_url}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        lms.shutdown()
        lms.server_close()


def test_a_learner_launches_in_a_frame_without_cookies_through_the_storage_frame(stack, browser):
    from playwright.sync_api import expect

    context = browser.new_context()
    course = context.new_page()
    course.goto(f"{stack['platform'].url}/course")
    tool = course.frame_locator('iframe[name="tool"]')
    expect(tool.get_by_text("does not allow this activity to keep you signed in")).to_be_visible(
        timeout=15_000
    )  # the launch went through, its state read back from the frame; the session's cookie
    # is refused here too, so the learner goes on in a new window
    storage = course.frame(name=FRAME)
    assert storage.evaluate("window.handled") == ["lti.put_data", "lti.get_data"]
    assert not [c for c in context.cookies() if c["name"].startswith(("lti1p3", "grader"))]

    link = tool.get_by_role("link", name="Open the activity in a new window")
    assert link.get_attribute("href").startswith("/learn/enter/")  # the launch's one-time link
    with context.expect_page() as opened:
        link.click()
    window = opened.value
    expect(window.get_by_role("heading", level=1)).to_have_text("Practice set")
    window.get_by_role("link", name=TITLE).click()
    expect(window.get_by_role("heading", level=1)).to_have_text(TITLE)


def test_a_storage_frame_that_does_not_answer_leaves_the_new_window(stack, browser):
    from playwright.sync_api import expect

    course = browser.new_context().new_page()
    course.goto(f"{stack['platform'].url}/course?silent=1")
    tool = course.frame_locator('iframe[name="tool"]')
    expect(tool.get_by_text("does not allow this activity to keep you signed in")).to_be_visible(
        timeout=15_000
    )
    assert course.frame(name=FRAME).evaluate("window.handled") == ["lti.put_data"]
    link = tool.get_by_role("link", name="Open the activity in a new window")
    href = link.get_attribute("href")
    assert href.startswith(f"{stack['tool']}/lti/login?") and "lti1p3_new_window=1" in href
    assert link.get_attribute("target") == "_blank"
    assert "/auth" not in course.frame(name="tool").url  # it stayed on the tool's page
