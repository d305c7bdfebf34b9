"""Input at the edge: hostile input is refused once, before any view, with a clear 4xx.

Every request passes `guard` first: a bounded body (chunked ones too), no control characters
in the path, query, form fields or headers, and JSON bodies parsed with bounded depth and
numbers (finite, within 64 bits) and no NUL or lone surrogate in any string. PostgreSQL cannot
store NUL, Python's parser recurses on nesting, and huge numbers overflow dates and BIGINTs;
each of those used to reach a view and answer 500.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from .i18n import page_context  # the page's language from the request alone: no database

MAX_ROW_ID = 2**31 - 1  # the largest id an INTEGER primary key can hold (PostgreSQL)
MAX_JSON_DEPTH = 64  # gateways' events nest under ten levels; the API's bodies three
MAX_JSON_NUMBER = 2**63 - 1
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Endpoints allowed a larger body than MAX_CONTENT_LENGTH (a file upload): endpoint -> bytes.
LARGER_BODIES: dict[str, int] = {}

# C0 controls and DEL, except tab, line feed and carriage return (textareas send those), and
# lone surrogates (only JSON escapes can make them; they are not text and not UTF-8).
CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
CONTROL_IN_PATH = re.compile("[\x00-\x1f\x7f]")
CONTROL_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 §5.5: no CTL but HTAB
# What no database column can hold: NUL (PostgreSQL) and lone UTF-16 surrogates (not UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JsonRejected(ValueError):
    """JSON that parses but must not be used: too deep, a number out of range, bad text."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_JSON_NUMBER:
        raise JsonRejected("A number is larger than 64 bits.")
    return value


def _bounded_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_JSON_NUMBER:
        raise JsonRejected("A number is out of range.")
    return value


def _no_constant(name: str):
    raise JsonRejected(f"{name} is not a JSON number.")


def load_json(raw: bytes | str, *, text: re.Pattern = UNSTORABLE) -> Any:
    """json.loads with bounded depth and numbers, and no `text` match in keys or strings.

    Raises JsonRejected for hostile JSON, ValueError (as json.loads) for text that is not JSON.
    """
    try:
        value = json.loads(raw, parse_int=_bounded_int, parse_float=_bounded_float,
                           parse_constant=_no_constant)
    except RecursionError:
        raise JsonRejected(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
    _check_tree(value, text)
    return value


def _check_tree(value: Any, text: re.Pattern) -> None:
    stack = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise JsonRejected(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(item, str):
            if text.search(item):
                raise JsonRejected("Text must not contain control characters.", where or None)
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{where}.{key}" if where else key
                if text.search(key):
                    raise JsonRejected("Names must not contain control characters.",
                                       _printable(name))
                stack.append((child, depth + 1, name))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))


def _printable(name: str) -> str:
    return CONTROL_IN_PATH.sub("?", UNSTORABLE.sub("?", name))[:100]


def row_id(text: str) -> int:
    """A query-string id (`?before=`): `type=row_id` turns anything else into the default."""
    value = int(text)
    if not 0 < value <= MAX_ROW_ID:
        raise ValueError("not a row id")
    return value


class RowIdConverter(IntegerConverter):
    """`<int:...>` in routes: ids beyond INTEGER match nothing (404) instead of overflowing."""

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits, min, MAX_ROW_ID if max is None else max, signed)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


def init_app(app: Flask) -> None:
    """Before the blueprints are registered (the converter) and before CSRF (the guard)."""
    app.url_map.converters["int"] = RowIdConverter
    app.before_request(guard)


def guard():
    try:
        _check_request()
    except Refused as exc:
        return refusal(exc)
    return None


def _check_request() -> None:
    if CONTROL_IN_PATH.search(request.path):
        raise Refused(404, "not_found", "No such page.")
    for name, value in request.headers.items():
        if CONTROL_IN_HEADER.search(value) or CONTROL_IN_HEADER.search(name):
            raise Refused(400, _bad(), "A request header contains control characters.")
    for name, value in request.args.items(multi=True):
        if CONTROL_IN_TEXT.search(name) or CONTROL_IN_TEXT.search(value):
            raise Refused(400, _bad(), "The address contains control characters.",
                          {_printable(name): "Must not contain control characters."})
    raw = _bounded_body()
    if not raw:
        return
    if request.mimetype in FORM_MIMETYPES:
        _check_form()
    _check_json(raw)  # whatever the type: the API and the gateways parse the raw body


def _webhook() -> bool:
    return request.path.startswith("/payments/webhook/")


def _bad() -> str:
    """The error code of a refused request: a webhook's own, or HTTP's."""
    return "malformed_payload" if _webhook() else "bad_request"


def _bounded_body() -> bytes:
    """The whole body, read once and cached for the view; 413 past the limit, chunked too.

    Werkzeug stops a chunked (length-less) body at MAX_CONTENT_LENGTH without an error, which
    would hand the view a truncated body; one that fills the limit is refused instead.
    """
    if request.endpoint in LARGER_BODIES:
        request.max_content_length = LARGER_BODIES[request.endpoint]
    limit = request.max_content_length
    raw = request.get_data(cache=True)
    if limit is not None and request.content_length is None and len(raw) >= limit:
        raise RequestEntityTooLarge()
    return raw


def _check_form() -> None:
    for name, value in request.form.items(multi=True):
        if CONTROL_IN_TEXT.search(name) or CONTROL_IN_TEXT.search(value):
            raise Refused(400, _bad(), "A form field contains control characters.",
                          {_printable(name): "Must not contain control characters."})
    for name, upload in request.files.items(multi=True):
        if CONTROL_IN_TEXT.search(name) or CONTROL_IN_TEXT.search(upload.filename or ""):
            raise Refused(400, _bad(), "A file name contains control characters.")


def _check_json(raw: bytes) -> None:
    """Anything that parses as JSON is checked.

    Gateway events are signed data and may carry any printable text; only what cannot be
    stored is refused there. Everything else (the API) must be free of control characters.
    """
    webhook = _webhook()
    try:
        load_json(raw, text=UNSTORABLE if webhook else CONTROL_IN_TEXT)
    except JsonRejected as exc:
        if exc.where and not webhook:
            raise Refused(422, "validation_failed", "Some fields are missing or invalid.",
                          {exc.where: "Must not contain control characters."}) from None
        raise Refused(400, "malformed_payload" if webhook else "invalid_json",
                      exc.message) from None
    except (ValueError, UnicodeDecodeError):
        return  # not JSON at all: the view answers that in its own words


# The JSON API's paths (API key): refusals and outages answer there in JSON.
API_PREFIXES = ("/payments/", "/webhook-endpoints")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path.endswith(".json")


def wants_json() -> bool:
    return is_api_path(request.path)


def refusal(exc: Refused):
    if wants_json():
        body = {"code": exc.code, "message": exc.message}
        if exc.fields and exc.code == "validation_failed":
            body["fields"] = exc.fields
        return jsonify(error=body), exc.status
    if exc.status == 404 and request.path.startswith("/pay/"):
        return plain_page("pay/not_found.html", 404)
    return plain_page("errors/refused.html", exc.status, message=exc.message)


def plain_page(template: str, status: int, **context) -> Response:
    """A page rendered without the context processors: Flask-Login's loads the signed-in user
    (from the database, which may be down; with its session check, which a refused request
    must not trip). It needs neither a user nor a lab and is the same for everyone."""
    html = current_app.jinja_env.get_template(template).render(**page_context(), **context)
    return Response(html, status, mimetype="text/html")
