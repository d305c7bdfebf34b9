"""Hostile input against every route of the url_map: no 5xx, and refused input stores nothing.

Shared by the SQLite run (tests/web) and the PostgreSQL run (tests/postgres), where NUL bytes,
over-long text and out-of-range numbers used to reach the database and answer 500.

For each rule and each method it accepts, a valid baseline request is built (real ids and
tokens in the path, the fields of the forms the app itself renders for that URL, a signed
sandbox event, a valid API body), then one position at a time is replaced by a hostile value:
a path parameter, a query argument, a form field, a JSON value, the whole JSON body, a header.

Two tables:
- REFUSED: input no route may accept (NUL and other control characters, lone surrogates,
  JSON too deep or with numbers out of range). Every such request answers 4xx and the row
  count of every table is unchanged (see ROWS_MAY_CHANGE for the one exception).
- EXTREMES: values of the right shape but out of range (huge ids and amounts, year 1 and 9999,
  over-long text, invalid UTF-8). These must never answer 5xx; a valid action may still happen.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

from sqlalchemy import func, select

from gateways import GATEWAYS
from gateways import sandbox as sandbox_wire
from portal.models import Base, Customer, Payment, Role, WebhookDelivery, utcnow
from portal.services import outhooks
from tests.api_helpers import make_api_key
from tests.conftest import csrf_from, sign_in
from tests.web.helpers import SECRET, post_event, start_payment

# A failed sign-in with a hostile but well-formed address is counted against that address:
# that is the throttle doing its job, not input being stored.
ROWS_MAY_CHANGE = {"login_throttles"}
# Routes that answer only for a paid link: walked with the paid link's token.
PAID_LINK_ENDPOINTS = frozenset({"pay.receipt", "pay.receipt_pdf"})

# One value per class: the guard treats every character of a class alike.
REFUSED = {"nul": "ab\x00cd"}
REFUSED_JSON_TEXT = {"nul": "ab\x00cd", "escape": "ab\x1b[31mcd", "lone_surrogate": "a\ud800b"}
# Signed gateway data may carry any printable text; what no database can store is refused.
REFUSED_WEBHOOK_TEXT = {"nul": "ab\x00cd", "lone_surrogate": "a\ud800b"}
# (The test client, like every server, refuses a line break inside a header by itself.)
REFUSED_HEADERS = {"nul": "ab\x00cd", "escape": "ab\x1bcd", "del": "ab\x7fcd"}
REFUSED_JSON_BODIES = {
    "deep_array": b"[" * 50000,
    "deep_object": b'{"a":' * 20000,
    "deep_but_closed": b"[" * 70 + b"]" * 70,
    "inf_number": b'{"amount": 1e999}',
    "nan": b'{"amount": NaN}',
    "huge_int": b'{"amount": 1' + b"0" * 30 + b"}",
    "utf16_deep": ("[" * 5000).encode("utf-16-be"),
    "bom_deep": b"\xef\xbb\xbf" + b"[" * 50000,
}
EXTREMES = {
    "int32_plus_one": str(2**31),  # past PostgreSQL's INTEGER ids
    "huge_digits": "9" * 25,  # past every integer column
    "year_one": "0001-01-01",
    "year_9999": "9999-12-31",
    "datetime_year_one": "0001-01-01T00:00",
    "long_text": "x" * 5000,
}
EXTREME_HEADERS = {"long": "x" * 5000}
EXTREME_JSON = [2**31, 2**63 - 1, -1, 1.5, True, None, "x" * 5000,
                "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "XXX"]
HEADERS_READ = ("Authorization", "Idempotency-Key", "Sandbox-Signature", "Stripe-Signature",
                "X-Razorpay-Signature", "X-VERIFY", "Content-Type", "Cookie", "Referer",
                "X-Forwarded-For", "User-Agent")
# Flask-Login's strong session protection ends the session when the client's address or
# User-Agent changes: with an extreme but accepted value there, the table's client would be signed
# out, and every later request would only meet the sign-in redirect. (Refused ones keep it.)
EXTREME_HEADERS_SKIPPED = {"X-Forwarded-For", "User-Agent"}
# The readiness probe answers 503 by design while no worker runs (as here): its own answer, not
# a failure, as long as that is its only reason. tests/web/test_ops.py checks its 200.
NOT_READY_ONLY_FOR_WANT_OF_A_WORKER = (b'"database":"ok"', b'"schema":"ok"', b'"worker":"silent"')
DESTRUCTIVE = re.compile(r"logout|revoke|deactivate|cancel|delete|reset|role")
HEADERS_PER_ROUTE = 2  # rotating over HEADERS_READ: each header meets many routes


class Forms(HTMLParser):
    """The forms of a page: (method, action path) -> {field: default value}."""

    def __init__(self, page_path: str):
        super().__init__()
        self.page_path = page_path
        self.forms: dict[tuple[str, str], dict[str, str]] = {}
        self.current: dict[str, str] | None = None
        self.select: str | None = None
        self.textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            action = urlsplit(a.get("action") or self.page_path).path or self.page_path
            key = ((a.get("method") or "get").upper(), action)
            self.current = self.forms.setdefault(key, {})
        elif self.current is None or not a.get("name"):
            return
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind not in ("submit", "button", "image", "file"):
                self.current.setdefault(a["name"], a.get("value") or "")
        elif tag == "select":
            self.select = a["name"]
            self.current.setdefault(a["name"], "")
        elif tag == "option" and self.select and (not self.current[self.select]
                                                  or "selected" in a):
            self.current[self.select] = a.get("value") or ""
        elif tag == "textarea":
            self.textarea = a["name"]
            self.current.setdefault(a["name"], "")

    def handle_data(self, data):
        if self.current is not None and self.textarea:
            self.current[self.textarea] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None


@dataclass
class Result:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    routes: set[str] = field(default_factory=set)


class HostileRun:
    """Builds the world once (a lab, users, a paid link, an API key), then fires the tables."""

    def __init__(self, app, db, build):
        self.app, self.db = app, db
        self.lab = build.lab("acme", name="Acme Diagnostics")
        self.admin = build.user(self.lab, "admin@acme.test", role=Role.ADMIN)
        self.other = build.user(self.lab, "staff@acme.test")
        # An outgoing webhook endpoint (the lab in test mode: 127.0.0.1 is allowed), so that
        # links get deliveries and the integration pages have rows; no worker sends them here.
        app.config["PORTAL_WEBHOOK_TEST_MODE"] = "all"
        self.endpoint = outhooks.create_endpoint(db, app.config, self.lab,
                                                 "http://127.0.0.1:9/hook").endpoint
        db.commit()
        self.link = build.link(self.lab)
        self.delivery_id = db.scalar(select(func.min(WebhookDelivery.id)))
        self.open_link = build.link(self.lab)
        self.api_key = make_api_key(db, self.lab)
        self.client = app.test_client()
        self.bare = app.test_client(use_cookies=False)
        assert sign_in(self.client, self.admin.email).status_code == 302
        self.reference = start_payment(self.client, self.link)
        assert post_event(self.client, self.reference).status_code == 200
        self.payment = db.scalar(select(Payment).where(Payment.reference == self.reference))
        self.customer_id = db.scalar(select(func.min(Customer.id))) or 1
        self.csrf = csrf_from(self.client.get("/links/new").get_data(as_text=True))
        checked = self.client.post("/links/bulk", data={
            "csrf_token": self.csrf, "file": (io.BytesIO(b"name,phone,amount,bill_reference\n"
                                                         b"Asha Rao,+919876543210,100,H-1\n"),
                                              "h.csv")}, content_type="multipart/form-data")
        assert checked.status_code == 303
        upload_id = checked.headers["Location"].rsplit("/", 1)[1]
        self.params = {
            "link_id": self.open_link.id, "payment_id": self.payment.id,
            "user_id": self.other.id, "key_id": 1, "customer_id": self.customer_id,
            "profile_id": 1, "refund_id": 1, "lab_id": self.lab.id,
            "token": self.open_link.token, "gateway": "sandbox", "name": "sandbox",
            "reference": self.reference, "colour": "112233", "digest": "0" * 64,
            "ext": "png", "filename": "app.css", "endpoint_id": self.endpoint.id,
            "delivery_id": self.delivery_id, "upload_id": upload_id}
        self.forms: dict[tuple[str, str], dict[str, str]] = {}
        self.result = Result()

    # --- the baseline -------------------------------------------------------------------
    def rules(self):
        """Rules in a safe order: ones that end the session or revoke things come last."""
        rules = [r for r in self.app.url_map.iter_rules()]
        return sorted(rules, key=lambda r: (bool(DESTRUCTIVE.search(r.rule)), r.rule))

    def path(self, rule, override: dict | None = None) -> str:
        values = {name: self.params.get(name, 1) for name in rule.arguments}
        if rule.endpoint in PAID_LINK_ENDPOINTS:  # a receipt exists once the link is paid
            values["token"] = self.link.token
        values.update(override or {})
        out = rule.rule
        for name in rule.arguments:
            out = re.sub(rf"<(?:[^:<>]+:)?{name}>", lambda _m, n=name: str(values[n]), out)
        return out

    def discover_forms(self) -> None:
        for rule in self.rules():
            if "GET" in rule.methods and rule.endpoint != "static":
                path = self.path(rule)
                page = self.client.get(path)
                page.close()  # a streamed answer (the CSV) ends its context here, not later
                if page.mimetype == "text/html":
                    parser = Forms(path)
                    parser.feed(page.get_data(as_text=True))
                    for key, fields in parser.forms.items():
                        self.forms.setdefault(key, fields)

    def baseline(self, rule, method: str, path: str) -> dict:
        """headers, query and form or JSON body of a valid request to this rule."""
        headers: dict[str, str] = {}
        query = dict(self.forms.get(("GET", path), {})) if method == "GET" else {}
        form: dict | None = None
        body: dict | None = None
        if rule.rule.startswith(("/payments/", "/webhook-endpoints")) \
                and rule.endpoint != "webhooks.receive":
            headers["Authorization"] = f"Bearer {self.api_key}"
            if rule.endpoint in ("api.initiate", "api.batch"):
                body = {"amount": 1000, "currency": "INR", "bill_reference": "B-1",
                        "customer": {"name": "Asha Rao", "phone": "+919876543210"},
                        "expires_at": (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "metadata": {"k": "v"}}
                if rule.endpoint == "api.batch":
                    body = {"items": [body]}
            elif rule.endpoint == "api.create_webhook_endpoint" and method == "POST":
                body = {"url": "http://127.0.0.1:9/other", "events": ["link.paid"],
                        "description": "LIS"}
            elif rule.endpoint == "api.refund":
                body = {"payment_id": self.payment.id, "amount": 100, "reason": "test"}
            if rule.endpoint == "api.status":
                query = {"refresh": "true"}
        elif rule.endpoint == "webhooks.receive":
            body = json.loads(sandbox_wire.build_event("evt_h", True, self.reference, 123450,
                                                       "INR"))
        elif method != "GET":
            form = {"csrf_token": self.csrf, **self.forms.get((method, path), {})}
        return {"headers": headers, "query": query, "form": form, "json": body}

    # --- firing -------------------------------------------------------------------------
    def drop_flashes(self) -> None:
        """Redirects leave flash messages nobody reads here; the session cookie would grow."""
        with self.client.session_transaction() as session:
            session.pop("_flashes", None)

    def counts(self) -> dict[str, int]:
        tables = Base.metadata.sorted_tables
        row = self.db.execute(select(*(select(func.count()).select_from(t).scalar_subquery()
                                       for t in tables))).one()
        return dict(zip((t.name for t in tables), row, strict=True))

    def send(self, method, path, *, headers, query, form=None, json_body=None, raw=None,
             strict: bool, label: str, sign: bool = False):
        url = path + ("?" + urlencode(query) if query else "")
        headers = dict(headers)
        kwargs: dict = {}
        if raw is not None or json_body is not None:
            data = raw if raw is not None else json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
            kwargs["data"] = data
            if sign:
                headers.setdefault("Sandbox-Signature",
                                   sandbox_wire.sign(SECRET, data, int(time.time())))
        elif form is not None:
            kwargs["data"] = form
        before = self.counts() if strict else None
        # The cookie jar would replace a Cookie header: that one goes without the jar.
        client = self.bare if "Cookie" in headers else self.client
        try:
            response = client.open(url, method=method, headers=headers, **kwargs)
        except Exception as exc:  # the test client itself refused (it never does for these)
            self.result.failures.append(f"{label}: client error {exc!r}")
            return
        self.result.requests += 1
        response.get_data()
        response.close()
        status = response.status_code
        if status in (302, 303) and client is self.client:
            self.drop_flashes()
        if status == 503 and path == "/readyz" and all(
                word in response.get_data() for word in NOT_READY_ONLY_FOR_WANT_OF_A_WORKER):
            pass
        elif status >= 500:
            self.result.failures.append(f"{label}: {status} {response.get_data()[:200]!r}")
        elif strict:
            if status < 400:
                self.result.failures.append(f"{label}: accepted with {status}")
            after = self.counts()
            changed = {t for t in after if after[t] != before[t]} - ROWS_MAY_CHANGE
            if changed:
                self.result.failures.append(f"{label}: stored rows in {sorted(changed)}")

    def send_variant(self, method, rule, base, webhook, strict, label, **changes):
        """The baseline request of `rule` with `changes` (path, headers, query, form, ...)."""
        request = {"path": self.path(rule), "headers": base["headers"],
                   "query": base["query"], "form": base["form"], "json_body": base["json"],
                   "raw": None, "sign": webhook, **changes}
        self.send(method, request.pop("path"), strict=strict,
                  label=f"{method} {rule.rule} {label}", **request)

    def fire(self, table: dict, *, strict: bool) -> Result:
        headers_table = REFUSED_HEADERS if strict else EXTREME_HEADERS
        rotation = 0
        checked = False
        for rule in self.rules():
            if not checked and DESTRUCTIVE.search(rule.rule):
                checked = True  # a lost session would have made the rest shallow (302s)
                if self.client.get("/links").status_code != 200:
                    self.result.failures.append(f"signed out before {rule.rule}")
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                path = self.path(rule)
                base = self.baseline(rule, method, path)
                self.result.routes.add(f"{method} {rule.rule}")
                webhook = rule.endpoint == "webhooks.receive"

                def go(label, *, _ctx=(method, rule, base, webhook, strict), **changes):
                    self.send_variant(*_ctx, label, **changes)

                for name, value in table.items():
                    for arg in rule.arguments:
                        go(f"path {arg}={name}", path=self.path(rule, {arg: value}))
                    for arg in base["query"] or ["q"]:
                        go(f"query {arg}={name}", query={**base["query"], arg: value})
                    for arg in (base["form"] or {}):
                        if arg != "csrf_token" or strict:
                            go(f"form {arg}={name}", form={**base["form"], arg: value})
                if base["json"] is not None:
                    values = (REFUSED_WEBHOOK_TEXT if webhook else REFUSED_JSON_TEXT) \
                        if strict else {f"{v!r:.20}": v for v in EXTREME_JSON}
                    for name, value in values.items():
                        for where, body in replaced_leaves(base["json"], value):
                            go(f"json {where}={name}", json_body=body)
                    for name, raw in (REFUSED_JSON_BODIES if strict else {}).items():
                        go(f"body {name}", raw=raw)
                elif method != "GET" and strict:
                    for name, raw in list(REFUSED_JSON_BODIES.items())[:2]:
                        go(f"body {name}", raw=raw, form={})
                if webhook and strict:
                    for gateway in GATEWAYS:  # every gateway's webhook, form bodies too
                        gpath = self.path(rule, {"gateway": gateway})
                        for name, raw in REFUSED_JSON_BODIES.items():
                            go(f"{gateway} body {name}", path=gpath, raw=raw, sign=False)
                        go(f"{gateway} form nul", path=gpath, headers={}, json_body=None,
                           form={"Ref": "a\x00b", "PayRef": "1"}, sign=False)
                for _ in range(HEADERS_PER_ROUTE):
                    header = HEADERS_READ[rotation % len(HEADERS_READ)]
                    rotation += 1
                    if not strict and header in EXTREME_HEADERS_SKIPPED:
                        continue
                    for name, value in headers_table.items():
                        go(f"header {header}={name}",
                           headers={**base["headers"], header: value})
        return self.result


def replaced_leaves(body, value, where=""):
    """(path, a copy of body with that one leaf replaced by value) for every leaf."""
    if isinstance(body, dict):
        for key, child in body.items():
            for sub, replaced in replaced_leaves(child, value, f"{where}.{key}" if where
                                                 else key):
                yield sub, {**body, key: replaced}
    elif isinstance(body, list):
        for i, child in enumerate(body):
            for sub, replaced in replaced_leaves(child, value, f"{where}[{i}]"):
                yield sub, [*body[:i], replaced, *body[i + 1:]]
    else:
        yield where, value


def run_tables(app, db, build) -> tuple[Result, Result]:
    run = HostileRun(app, db, build)
    run.discover_forms()
    access = logging.getLogger("portal.access")
    level = access.level
    access.setLevel(logging.WARNING)  # thousands of access lines would only slow the run
    try:
        refused = run.fire(REFUSED, strict=True)
        run.result = Result()
        extremes = run.fire(EXTREMES, strict=False)
    finally:
        access.setLevel(level)
    return refused, extremes
