"""Per request: a request id (kept from a sane X-Request-ID or made), one access line, and the
latency by route. gunicorn's own access log stays off (`portal serve`): this line is the only
one, with the link's token cut short and the request id on it.

Cheap on purpose (the pay page is measured against a bare Flask app): a clock read, a context
variable, a random id, one log record and one histogram observation; no database.
"""

from __future__ import annotations

import logging
import random
import re
import time

from flask import Flask, current_app, g, request

from . import logs, metrics

access_log = logging.getLogger("portal.access")
TOKEN_IN_PATH = re.compile(r"^/pay/([^/]{6})[^/]*")
HEADER = "X-Request-ID"
# A client picks the method: anything else is one label value, not a new series per word.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def redact_path(path: str) -> str:
    """Request paths for logs: a link's token is a capability, so only its start is kept."""
    return TOKEN_IN_PATH.sub(r"/pay/\1…", path)


def new_request_id() -> str:
    """128 random bits in hex: unique, not secret (it is echoed and logged), so the fast
    generator will do; os.urandom would be a system call on every request."""
    return f"{random.getrandbits(128):032x}"  # nosec B311  # an id, not a secret


_series: dict[tuple[str, str, int], object] = {}  # (method, route, status) -> its histogram


def _histogram(method: str, route: str, status: int):
    child = _series.get((method, route, status))
    if child is None:  # labels() validates and locks: once per series, not per request
        child = _series[(method, route, status)] = metrics.REQUEST_SECONDS.labels(
            method, route, str(status))
    return child


def begin() -> None:
    incoming = request.headers.get(HEADER)
    rid = incoming if incoming and logs.SANE_REQUEST_ID.match(incoming) else new_request_id()
    g.portal_request = (rid, logs.set_request_id(rid), time.perf_counter())


def finish(response):
    started = g.get("portal_request")
    if started is None:  # a request the before_request hooks never saw
        return response
    rid, _token, began = started
    response.headers[HEADER] = rid
    seconds = time.perf_counter() - began
    req = request._get_current_object()  # one proxy lookup, not one per attribute
    rule = req.url_rule
    route = rule.rule if rule is not None else "(unmatched)"
    status = response.status_code
    method = req.method
    _histogram(method if method in METHODS else "other", route, status).observe(seconds)
    if access_log.isEnabledFor(logging.INFO) and current_app.config.get("PORTAL_ACCESS_LOG", True):
        path = redact_path(req.path)
        duration_ms = round(seconds * 1000, 1)
        access_log.info("%s %s %s %s %.1fms", req.remote_addr, method, path, status,
                        duration_ms,
                        extra={"method": method, "path": path, "route": route,
                               "status": status, "duration_ms": duration_ms,
                               "remote_addr": req.remote_addr})
    return response


def end(_exc=None) -> None:
    started = g.pop("portal_request", None)
    if started is not None:
        token = started[1]
        try:
            logs.reset_request_id(token)
        except ValueError:  # set in another context (a copied one): nothing to undo here
            logs.request_id.set(None)


def init_app(app: Flask) -> None:
    """First of the before_request hooks, so that every later refusal is timed and logged."""
    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.after_request(finish)
    app.teardown_request(end)
