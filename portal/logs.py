"""Log lines as text or JSON (`PORTAL_LOG_FORMAT=json`), each with the request id in force.

The request id lives in a context variable: set for a request by the app (portal/requests.py),
and for a job by the worker from the id its request stored in the job's payload, so that one
id ties a request's access line to the lines of every job it enqueued. Nothing here imports
Flask: the queue and the worker use it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar, Token

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# An incoming X-Request-ID is kept when it is short, plain text (UUIDs, hex, ULIDs, a proxy's
# "host-123"); anything else is replaced, so a log line can never carry a client's payload.
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "remote_addr")


def set_request_id(value: str | None) -> Token[str | None]:
    return request_id.set(value)


def reset_request_id(token: Token[str | None]) -> None:
    request_id.reset(token)


_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id.get()
    return record


def stamp_records() -> None:
    """Every record made from now on carries the request id in force, whatever its handler
    (ours, gunicorn's, a test's)."""
    if logging.getLogRecordFactory() is not _record_with_request_id:
        logging.setLogRecordFactory(_record_with_request_id)


class RequestIdFilter(logging.Filter):
    """Puts the request id in force on every record (as `request_id`), for both formats."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the access
    fields (method, path, status, duration_ms...) when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def wants_json(environ: dict[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(
        "PORTAL_LOG_FORMAT", "").strip().lower() == "json"


def formatter(json_format: bool | None = None) -> logging.Formatter:
    return JsonFormatter() if (wants_json() if json_format is None else json_format) \
        else logging.Formatter(TEXT_FORMAT)


REQUEST_ID_FILTER = RequestIdFilter()


def prepare(*handlers: logging.Handler, json_format: bool | None = None) -> None:
    """The chosen format and the request-id filter on these handlers."""
    chosen = formatter(json_format)
    for handler in handlers:
        handler.setFormatter(chosen)
        if REQUEST_ID_FILTER not in handler.filters:
            handler.addFilter(REQUEST_ID_FILTER)


def configure(level: int = logging.INFO) -> None:
    """The root logger's one stream handler (stderr) in the chosen format; idempotent.

    Handlers someone else attached (pytest's, a log shipper's) are left as they are.
    """
    stamp_records()
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_portal_handler", False)]
    if not ours and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler._portal_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        ours = [handler]
        root.setLevel(level)
    prepare(*ours)
