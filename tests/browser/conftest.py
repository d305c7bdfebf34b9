"""Browser tests: the real app served over HTTP from a thread, driven by headless Chromium.

Each test gets the `app` of tests/conftest.py (its own migrated SQLite file), served by a
threaded werkzeug server on a free port of 127.0.0.1, plus the background job worker in a
thread: the sandbox gateway's signed webhooks reach the server over real HTTP, as in
production. Chromium is Debian's (`playwright install` cannot download browsers here).
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD

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
        from portal.services.jobs import start_worker_thread

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
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    # Read at request time for patient URLs, gateway return URLs and the webhook notify URL.
    app.config["PORTAL_BASE_URL"] = url
    serving = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    serving.start()
    live = LiveServer(app, url)
    live.start_worker()
    try:
        yield live
    finally:
        live.stop_worker()
        server.shutdown()
        serving.join(timeout=10)
        server.server_close()


class WorkerPausingBuilder:
    """The shared `build`, writing only while the job worker is paused.

    The test's `db` session may begin its transactions deferred (tests/conftest.py): a
    read-then-write there fails at once with "database is locked", without waiting, if the
    worker holds SQLite's write lock for one of its polls at that moment. Pausing the
    worker (the only other writer while a test sets up its data) rules that out.
    """

    def __init__(self, builder, live_server: LiveServer):
        self._builder = builder
        self._live_server = live_server

    def __getattr__(self, name):
        attr = getattr(self._builder, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def paused(*args, **kwargs):
            with self._live_server.worker_paused():
                return attr(*args, **kwargs)
        return paused


@pytest.fixture
def build(build, live_server):
    """tests/conftest.py's builder (also behind `lab`, `staff`), safe beside the worker."""
    return WorkerPausingBuilder(build, live_server)


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
