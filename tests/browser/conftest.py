"""Browser tests: the real app served over HTTP from a thread, driven by headless Chromium.

Each test gets the `app` of tests/conftest.py (its own migrated SQLite file), served by a
threaded werkzeug server on a free port of 127.0.0.1, plus the background job worker in a
thread: the sandbox gateway's signed webhooks reach the server over real HTTP, as in
production. Chromium is Debian's (`playwright install` cannot download browsers here).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, serving

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"


# pytest-playwright 0.10 provides its fallback `base_url` fixture (used when pytest-base-url
# is not installed) as a method of a plugin class, which pytest 9 deprecates with a
# PytestRemovedIn10Warning when the fixture is set up; `filterwarnings = error` would turn
# that into an error in every test here. Only that one message is ignored.
PLAYWRIGHT_BASE_URL_WARNING = (
    "ignore:Session-scoped fixtures defined as instance methods are deprecated"
    ":pytest.PytestRemovedIn10Warning")

MARKS = [pytest.mark.browser, pytest.mark.filterwarnings(PLAYWRIGHT_BASE_URL_WARNING)]


def pytest_collection_modifyitems(config, items):
    """Every test in this folder drives a browser: mark it so `-m "not browser"` skips it.

    (`pytestmark` only works in test modules, not in a conftest, hence this hook.)
    """
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            for mark in MARKS:
                item.add_marker(mark)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "headless": True,
        "executable_path": CHROMIUM if os.path.exists(CHROMIUM) else None,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"],
    }


class LiveServer:
    """The running app: `live_server("/pay/x")` is an absolute URL; the worker can be paused.

    Pausing the worker holds back the sandbox's webhook, so a test can see the
    "Processing your payment…" page before the outcome arrives instead of racing it.
    """

    def __init__(self, app, url: str):
        self.app = app
        self.url = url
        self._worker: tuple[threading.Thread, threading.Event] | None = None

    def __call__(self, path: str) -> str:
        return self.url + path

    def start_worker(self) -> None:
        from portal.worker.runner import start_worker_thread

        if self._worker is None:
            self._worker = start_worker_thread(self.app, poll_interval=0.2)

    def stop_worker(self) -> None:
        if self._worker is not None:
            thread, stop = self._worker
            self._worker = None
            stop.set()
            thread.join(timeout=20)
            assert not thread.is_alive(), "the job worker did not stop"

    @contextmanager
    def worker_paused(self):
        running = self._worker is not None
        self.stop_worker()
        try:
            yield
        finally:
            if running:
                self.start_worker()


@pytest.fixture
def live_server(app):
    """The app on http://127.0.0.1:<free port>, with the job worker running beside it."""
    with serving(app) as url:
        live = LiveServer(app, url)
        live.start_worker()
        try:
            yield live
        finally:
            live.stop_worker()


@pytest.fixture
def sign_in(live_server):
    """`sign_in(page, email)`: signs in through the login form as a person would."""
    from playwright.sync_api import expect

    def sign_in(page, email: str, password: str = PASSWORD) -> None:
        page.goto(live_server("/login"))
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    return sign_in
