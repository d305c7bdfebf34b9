"""A threaded HTTP server on a free port of 127.0.0.1 for a fake gateway's WSGI app."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

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
    status: int = 0
    body: bytes = b""
    content_type: str = "application/json"
    after: bool = False  # do the work, then lose the answer
    delay: float = 0.0

    def response(self) -> Response:
        return Response(self.body, status=self.status, content_type=self.content_type)


class FakeServer:
    """Subclasses implement `handle(request) -> Response`; every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self._faults: list = []
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
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _take_fault(self, path: str):
        """The first queued fault for `path`, removed from the queue; None when there is none."""
        with self.lock:
            for fault in self._faults:
                if fault.path is None or path.startswith(fault.path):
                    self._faults.remove(fault)
                    return fault
        return None

    def requests_to(self, method: str, path_prefix: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if r.method == method and r.path.startswith(path_prefix)]
