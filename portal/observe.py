"""Per request: a request id (kept from a sane X-Request-ID or made), one access line, and the
latency by route. gunicorn's own access log stays off (`portal serve`): this line is the only
one, with the link's token cut short and the request id on it.

Cheap on purpose (the pay page is measured against a bare Flask app): a clock read, a context
variable, a random id, one log record and one histogram observation; no database.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

from flask import Flask, g, request

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
    return secrets.token_hex(16)


def begin() -> None:
    incoming = request.headers.get(HEADER)
    rid = incoming if incoming and logs.SANE_REQUEST_ID.match(incoming) else new_request_id()
    g.request_id = rid
    g.request_token = logs.set_request_id(rid)
    g.request_started = time.perf_counter()


def finish(response):
    started = g.get("request_started")
    rid = g.get("request_id")
    if started is None or rid is None:  # a request the before_request hooks never saw
        return response
    response.headers[HEADER] = rid
    seconds = time.perf_counter() - started
    rule = request.url_rule
    route = rule.rule if rule is not None else "(unmatched)"
    status = response.status_code
    method = request.method if request.method in METHODS else "other"
    metrics.REQUEST_SECONDS.labels(method, route, str(status)).observe(seconds)
    if access_log.isEnabledFor(logging.INFO):
        path = redact_path(request.path)
        duration_ms = round(seconds * 1000, 1)
        access_log.info("%s %s %s %s %.1fms", request.remote_addr, request.method, path,
                        status, duration_ms,
                        extra={"method": request.method, "path": path, "route": route,
                               "status": status, "duration_ms": duration_ms,
                               "remote_addr": request.remote_addr})
    return response


def end(_exc=None) -> None:
    token = g.pop("request_token", None)
    if token is not None:
        try:
            logs.reset_request_id(token)
        except ValueError:  # set in another context (a copied one): nothing to undo here
            logs.request_id.set(None)


def init_app(app: Flask) -> None:
    """First of the before_request hooks, so that every later refusal is timed and logged."""
    app.before_request_funcs.setdefault(None, []).insert(0, begin)
    app.after_request(finish)
    app.teardown_request(end)
