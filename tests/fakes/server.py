"""The base of every fake gateway: a threaded HTTP server on a free port of 127.0.0.1 that
records each request, a queue of canned faults for the next API calls, and an outbox whose one
thread makes the fake's own calls (webhooks, callbacks, datafeeds) when they fall due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None


@dataclass
class Fault:
    """A canned failure for the next API call whose path starts with `path` (None: any)."""

    path: str | None
    status: int = 0  # 0: no error answer, only the delay
    body: bytes | str = b""
    content_type: str = "application/json"
    after: bool = False  # do the work, then (after the delay) lose the answer
    delay: float = 0.0

    def response(self) -> Response:
        return Response(self.body, status=self.status, content_type=self.content_type)


class FakeServer:
    """Subclasses implement `handle(request) -> Response`; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self.delivered = threading.Condition(self.lock)  # notified by `record`
        self._faults: list[Fault] = []
        self._outbox: list[tuple[float, int, Callable[[], None]]] = []  # a heap by due time
        self._outbox_changed = threading.Condition()
        self._queued = itertools.count()  # keeps calls due at the same moment in order
        self._closing = False
        self._courier: threading.Thread | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def handle(self, request: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        body = request.get_data(cache=True)
        recorded = Recorded(
            method=request.method, path=request.path, headers=dict(request.headers),
            query=request.args.to_dict(), body=body,
            form=request.form.to_dict() if request.mimetype ==
            "application/x-www-form-urlencoded" else {},
            json=request.get_json(silent=True) if request.is_json else None)
        with self.lock:
            self.requests.append(recorded)
        return self.handle(request)(environ, start_response)

    def start(self) -> FakeServer:
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        self._closing = False
        self._courier = threading.Thread(target=self._courier_loop,
                                         name=f"{type(self).__name__}-outbox", daemon=True)
        self._courier.start()
        return self

    def stop(self) -> None:
        """Makes the calls still in the outbox (each when due), then stops the server."""
        if self._courier is not None:
            with self._outbox_changed:
                self._closing = True
                self._outbox_changed.notify()
            self._courier.join(timeout=15)
            self._courier = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults ----------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        with self.lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> Fault | None:
        """The first queued fault for `path`, removed from the queue; None when there is none."""
        with self.lock:
            for fault in self._faults:
                if fault.path is None or path.startswith(fault.path):
                    self._faults.remove(fault)
                    return fault
        return None

    def with_faults(self, path: str, work: Callable[[], Response]) -> Response:
        """`work()`'s answer, unless a fault queued for `path` delays it, replaces it, or (with
        `after`) lets the work happen and then loses its answer. A fault that only delays lets
        the next fault for `path` apply to the same call."""
        fault = self._take_fault(path)
        while fault is not None and not fault.after:
            time.sleep(fault.delay)
            if fault.status:
                return fault.response()
            fault = self._take_fault(path)
        response = work()
        if fault is not None and fault.after:
            time.sleep(fault.delay)
            if fault.status:
                return fault.response()
        return response

    # ---- the outbox ------------------------------------------------------------------------

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Runs `action` on the outbox thread in `delay` seconds (one action at a time)."""
        with self._outbox_changed:
            heapq.heappush(self._outbox, (time.monotonic() + delay, next(self._queued), action))
            self._outbox_changed.notify()

    def post_later(self, delay: float, url: str, body: bytes, headers: dict, sent: list,
                   sent_as: Callable[[int | None], Any]) -> None:
        """POSTs `body` to `url` in `delay` seconds, then records `sent_as(status)` in `sent`
        (status None when the connection failed)."""
        self.later(delay, lambda: self.record(sent, sent_as(self.post(url, body, headers)[0])))

    @staticmethod
    def post(url: str, body: bytes, headers: dict) -> tuple[int | None, str]:
        """The status and text of the answer; (None, "") when the connection failed."""
        try:
            answer = requests.post(url, data=body, headers=headers, timeout=10)
        except requests.RequestException:
            return None, ""
        return answer.status_code, answer.text

    def record(self, sent: list, item: Any) -> None:
        with self.delivered:
            sent.append(item)
            self.delivered.notify_all()

    def wait_sent(self, sent: list, count: int, timeout: float, what: str | None) -> list:
        """A copy of `sent` once it holds `count` items; AssertionError naming `what` if it
        does not within `timeout` seconds (`what=None`: return what there is)."""
        with self.delivered:
            if not self.delivered.wait_for(lambda: len(sent) >= count, timeout) and what:
                raise AssertionError(f"{len(sent)} of {count} {what} sent")
            return list(sent)

    def _courier_loop(self) -> None:
        with self._outbox_changed:
            while self._outbox or not self._closing:
                wait = self._outbox[0][0] - time.monotonic() if self._outbox else None
                if wait is not None and wait <= 0:
                    action = heapq.heappop(self._outbox)[2]
                    self._outbox_changed.release()
                    try:
                        action()
                    finally:
                        self._outbox_changed.acquire()
                else:
                    self._outbox_changed.wait(wait)

    def requests_to(self, method: str, path_prefix: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if r.method == method and r.path.startswith(path_prefix)]
