"""A stateful fake of Razorpay's API speaking its wire format, with a hosted payment-link page.

Shapes follow razorpay/markdown-docs (api/payments/payment-links/*, api/refunds/*,
webhooks/payments.md, webhooks/payment-links.md, webhooks/refunds.md) and the razorpay-python SDK.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import string
import time
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import urlencode

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

MIN_EXPIRY = 15 * 60
MAX_EXPIRY = 183 * 24 * 3600  # "cannot exceed six months from the date of creation"
LINK_FIELDS = {"amount", "currency", "accept_partial", "first_min_partial_amount", "expire_by",
               "reference_id", "description", "customer", "notify", "reminder_enable", "notes",
               "callback_url", "callback_method", "upi_link", "options"}
CURRENCIES = {"INR", "USD", "EUR", "GBP", "SGD", "AED", "AUD", "CAD", "CHF", "HKD", "JPY", "MYR",
              "NZD", "SAR", "QAR", "SEK", "ZAR", "THB", "KWD", "BHD", "OMR", "JOD"}
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}
THREE_DECIMAL = {"KWD", "BHD", "OMR", "JOD", "IQD", "TND"}
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{10,}$")
NA = {"source": "NA", "step": "NA", "reason": "NA"}
ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str = "") -> str:
    return prefix + "".join(secrets.choice(ALNUM) for _ in range(14))


def sign_webhook(secret: str, body: bytes) -> str:
    """`X-Razorpay-Signature`: hex HMAC-SHA256 of the exact raw body, keyed by webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_payment_link_return(key_secret: str, plink_id: str, reference_id: str, status: str,
                             payment_id: str) -> str:
    """`razorpay_signature` on the callback: HMAC-SHA256(key secret, "id|reference|status|pay")."""
    message = f"{plink_id}|{reference_id}|{status}|{payment_id}"
    return hmac.new(key_secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def error_body(description: str, field: str | None = None, *, code: str = "BAD_REQUEST_ERROR",
               source: str = "business", step: str = "payment_initiation",
               reason: str = "input_validation_failed", metadata: dict | None = None) -> dict:
    error = {"code": code, "description": description, "source": source, "step": step,
             "reason": reason, "metadata": metadata or {}}
    if field:
        error["field"] = field
    return {"error": error}


class ApiError(Exception):
    def __init__(self, description: str, field: str | None = None, status: int = 400, **kw):
        super().__init__(description)
        self.status = status
        self.body = error_body(description, field, **kw)


class SentEventBase(NamedTuple):
    url: str
    event: str
    body: bytes
    status: int | None  # None when the connection failed


class SentEvent(SentEventBase):
    """(url, event, body, status); `.headers` are the headers sent, `.json` the parsed body."""

    def __new__(cls, url, event, body, status, headers=None):
        self = super().__new__(cls, url, event, body, status)
        self.headers = headers or {}
        return self

    @property
    def json(self) -> dict:
        return json.loads(self.body)


API = Map([Rule(path, methods=[method], endpoint=endpoint) for method, path, endpoint in [
    ("POST", "/v1/payment_links", "create_link"),
    ("GET", "/v1/payment_links", "list_links"),
    ("GET", "/v1/payment_links/<plink_id>", "fetch_link"),
    ("POST", "/v1/payment_links/<plink_id>/cancel", "cancel_link"),
    ("GET", "/v1/orders/<order_id>", "fetch_order"),
    ("GET", "/v1/orders/<order_id>/payments", "list_order_payments"),
    ("GET", "/v1/payments/<pay_id>", "fetch_payment"),
    ("GET", "/v1/payments/<pay_id>/card", "fetch_card"),
    ("POST", "/v1/payments/<pay_id>/refund", "create_refund"),
    ("GET", "/v1/payments/<pay_id>/refunds", "list_refunds"),
    ("GET", "/v1/payments/<pay_id>/refunds/<refund_id>", "fetch_payment_refund"),
    ("GET", "/v1/refunds/<refund_id>", "fetch_refund"),
    ("POST", "/v1/customers", "create_customer"),
    ("GET", "/v1/customers/<cust_id>", "fetch_customer"),
    ("GET", "/v1/customers/<cust_id>/tokens", "list_tokens"),
    ("GET", "/v1/customers/<cust_id>/tokens/<token_id>", "fetch_token"),
    ("DELETE", "/v1/customers/<cust_id>/tokens/<token_id>", "delete_token"),
]])


class Call(NamedTuple):
    key_id: str
    data: dict
    query: Any  # werkzeug MultiDict
    headers: Any


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(f"The {field} must be an integer.", field)
    if isinstance(value, str):
        if not value.isdigit():
            raise ApiError(f"The {field} must be an integer.", field)
        return int(value)
    return value


def _collection(items: list) -> dict:
    return {"entity": "collection", "count": len(items), "items": items}


def _major(amount: int, currency: str) -> str:
    places = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    return f"{amount / 10 ** places:.{places}f}"


class FakeRazorpay(FakeServer):
    def __init__(self, keys: dict[str, str] | None = None, webhook_secret: str = "webhook_secret",
                 account_id: str | None = None) -> None:
        super().__init__()
        self.keys = dict(keys or {"rzp_test_x": "secret"})
        self.webhook_secret = webhook_secret
        self.account_id = account_id or new_id("acc_")
        self.refunds_settle_immediately = False
        self.webhook_delay = 0.2
        self.webhooks: list[tuple[str, set[str] | None, str]] = []
        self.sent_events: list[SentEvent] = []
        self.links: dict[str, dict] = {}
        self.orders: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # token id -> token (with private "_customer_id")
        self._link_key: dict[str, str] = {}  # plink id -> the key id that created it
        self._references: set[str] = set()
        self._idempotency: dict[str, tuple[str, dict, str]] = {}

    # ---- test controls ---------------------------------------------------------------------

    def add_webhook(self, url: str, events: set[str] | None = None,
                    secret: str | None = None) -> None:
        """Deliver `events` (None: every event) to `url`, signed with `secret` or webhook_secret."""
        self.webhooks.append((url, set(events) if events else None, secret or self.webhook_secret))

    def fail_next(self, status: int, error: str | dict | None = None, *, path: str | None = None,
                  after: bool = False, raw: bytes | None = None) -> None:
        """Answer the next /v1 call (whose path starts with `path`) with an error.

        `error`: a description or fields of Razorpay's error object; `raw`: a non-JSON body (an
        HTML 502 page from a proxy, say); `after=True` does the work first and loses the answer.
        """
        if raw is not None:
            self.add_fault(Fault(path, status, raw, "text/html", after))
            return
        code = "SERVER_ERROR" if status >= 500 else "BAD_REQUEST_ERROR"
        fields = error if isinstance(error, dict) else {"description": error or (
            "The server encountered an error. The incident has been reported to admins."
            if status >= 500 else "Bad request")}
        body = error_body(fields.get("description", ""), code=code, **NA)
        body["error"].update(fields)
        self.add_fault(Fault(path, status, json.dumps(body).encode(), after=after))

    def delay_next(self, seconds: float, *, path: str | None = None) -> None:
        """Sleep `seconds` before answering the next /v1 call (whose path starts with `path`)."""
        self.add_fault(Fault(path, delay=seconds))

    def wait_events(self, count: int, timeout: float = 5.0) -> list[SentEvent]:
        """Wait until `count` webhooks were delivered (or failed to be); return them all."""
        return self.wait_sent(self.sent_events, count, timeout, "webhooks")

    def send_event(self, event: str, payload: dict) -> bytes:
        """Build, sign and queue an event to every matching webhook; return the exact body."""
        body = json.dumps({
            "entity": "event", "account_id": self.account_id, "event": event,
            "contains": list(payload), "payload": payload, "created_at": int(time.time()),
        }, separators=(",", ":")).encode()
        event_id = new_id()
        for url, events, secret in self.webhooks:
            if events is None or event in events:
                headers = {"Content-Type": "application/json", "x-razorpay-event-id": event_id,
                           "X-Razorpay-Signature": sign_webhook(secret, body),
                           "User-Agent": "Razorpay-Webhook/v1"}
                self.post_later(self.webhook_delay, url, body, headers, self.sent_events,
                                partial(SentEvent, url, event, body, headers=headers))
        return body

    def expire(self, plink_id: str) -> dict:
        with self.lock:
            link = self.links[plink_id]
            if link["status"] not in ("created", "partially_paid"):
                raise ValueError(f"cannot expire a {link['status']} link")
            now = int(time.time())
            link.update(status="expired", expired_at=now, updated_at=now)
            self.send_event("payment_link.expired", {"payment_link": self._hook_link(link)})
            return dict(link)

    def process_refund(self, refund_id: str, ok: bool = True) -> dict:
        """Settle a pending refund as processed (or failed) and send refund.processed/.failed."""
        with self.lock:
            refund = self.refunds[refund_id]
            if refund["status"] != "pending":
                raise ValueError(f"refund {refund_id} is already {refund['status']}")
            payment = self.payments[refund["payment_id"]]
            if ok:
                refund.update(status="processed", speed_processed="normal",
                              acquirer_data={"arn": new_id("ARN")})
            else:
                refund["status"] = "failed"
                payment["amount_refunded"] -= refund["amount"]
                self._refund_state(payment)
            self._send_refund_event(f"refund.{refund['status']}", refund)
            return dict(refund)

    def add_token(self, customer_id: str, *, last4: str = "1111", network: str = "Visa") -> dict:
        """Save a card token for a customer (as Checkout would after a consented card payment)."""
        now = int(time.time())
        token = {
            "id": new_id("token_"), "entity": "token", "token": new_id(), "bank": None,
            "wallet": None, "method": "card",
            "card": {"entity": "card", "name": "", "last4": last4, "network": network,
                     "type": "credit", "issuer": None, "international": False, "emi": False,
                     "sub_type": "consumer", "expiry_month": 12, "expiry_year": 2030},
            "recurring": False, "auth_type": None, "mrn": None, "used_at": now,
            "created_at": now, "expired_at": now + 5 * 365 * 24 * 3600, "status": "active",
        }
        with self.lock:
            if customer_id not in self.customers:
                raise KeyError(customer_id)
            self.tokens[token["id"]] = {**token, "_customer_id": customer_id}
        return token

    # ---- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/pl/"):
            with self.lock:
                return self._hosted_page(request, request.path[len("/pl/"):].strip("/"))
        if not request.path.startswith("/v1/"):
            return Response("Not Found", status=404)
        return self.with_faults(request.path, lambda: self._locked_api(request))

    def _locked_api(self, request: Request) -> Response:
        with self.lock:
            return self._api(request)

    def _api(self, request: Request) -> Response:
        try:
            key_id = self._authenticate(request)
            try:
                endpoint, args = API.bind("fake").match(request.path.rstrip("/"), request.method)
            except HTTPException:
                raise ApiError("The requested URL was not found on the server.", **NA) from None
            call = Call(key_id, self._body(request), request.args, request.headers)
            return self._json(getattr(self, f"_{endpoint}")(call, **args))
        except ApiError as exc:
            return self._json(exc.body, exc.status)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _authenticate(self, request: Request) -> str:
        auth = request.authorization
        if (auth is None or auth.type != "basic" or auth.username not in self.keys
                or not hmac.compare_digest(self.keys[auth.username], auth.password or "")):
            raise ApiError("Authentication failed", status=401, **NA)
        return auth.username

    @staticmethod
    def _body(request: Request) -> dict:
        if request.method == "GET":
            return {}
        raw = request.get_data()
        if request.mimetype == "application/x-www-form-urlencoded":
            return request.form.to_dict()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ApiError("The request body is not valid JSON.", **NA) from None
        if not isinstance(data, dict):
            raise ApiError("The request body is not valid JSON.", **NA)
        return data

    # ---- payment links ---------------------------------------------------------------------

    def _create_link(self, call: Call) -> dict:
        data, now = call.data, int(time.time())
        for field in data:
            if field not in LINK_FIELDS:
                raise ApiError(f"{field} is/are not required and should not be sent", field)
        if "amount" not in data:
            raise ApiError("The amount field is required.", "amount")
        amount = _integer(data["amount"], "amount")
        currency = data.get("currency") or "INR"
        if currency not in CURRENCIES:
            raise ApiError("The selected currency is invalid.", "currency")
        if amount < 100:
            raise ApiError(f"The amount must be at least {currency} {_major(100, currency)}.",
                           "amount")
        reference = data.get("reference_id")
        if reference is not None:
            if not isinstance(reference, str) or len(reference) > 40:
                raise ApiError("The reference id may not be greater than 40 characters.",
                               "reference_id")
            if reference in self._references:
                raise ApiError("payment link creation with reference ID already attempted",
                               "reference_id")
        expire_by = _integer(data["expire_by"], "expire_by") if data.get("expire_by") else 0
        if expire_by and expire_by < now + MIN_EXPIRY:
            raise ApiError("timestamp must be atleast 15 minutes in future", "expire_by")
        if expire_by > now + MAX_EXPIRY:
            raise ApiError("timestamp must not be more than 6 months in future", "expire_by")
        if len(data.get("description") or "") > 2048:
            raise ApiError("The description may not be greater than 2048 characters.",
                           "description")
        if data.get("callback_url"):
            if not str(data["callback_url"]).startswith(("http://", "https://")):
                raise ApiError("The callback url format is invalid.", "callback_url")
            if data.get("callback_method") != "get":
                raise ApiError("callback_method must be get when callback_url is passed",
                               "callback_method")
        notes = data.get("notes") or None
        if notes is not None and (not isinstance(notes, dict) or len(notes) > 15):
            raise ApiError("Number of fields in notes should be less than or equal to 15",
                           "notes")
        if notes and any(len(str(value)) > 256 for value in notes.values()):
            raise ApiError("value: the length must not be greater than 255.", "notes")
        accept_partial = bool(data.get("accept_partial", False))
        first_min = _integer(data.get("first_min_partial_amount") or 0, "first_min_partial_amount")
        if first_min and (not accept_partial or first_min > amount):
            raise ApiError("first_min_partial_amount must be with accept_partial and at most"
                           " the amount", "first_min_partial_amount")
        if data.get("upi_link") and call.key_id.startswith("rzp_test_"):
            raise ApiError("UPI Payment Links is not supported in Test Mode. Please experience"
                           " the product in Live Mode.", "upi_link")
        plink_id = new_id("plink_")
        notify = data.get("notify") or {}
        link = {
            "accept_partial": accept_partial, "amount": amount, "amount_paid": 0,
            "cancelled_at": 0, "created_at": now, "currency": currency,
            "customer": dict(data.get("customer") or {}),
            "description": data.get("description") or "", "expire_by": expire_by,
            "expired_at": 0, "first_min_partial_amount": first_min, "id": plink_id,
            "notes": notes,
            "notify": {"email": bool(notify.get("email")), "sms": bool(notify.get("sms")),
                       "whatsapp": False},
            "payments": None, "reference_id": reference or "",
            "reminder_enable": bool(data.get("reminder_enable", False)),
            "reminders": {"status": "pending"} if data.get("reminder_enable") else {},
            "short_url": f"{self.url}/pl/{plink_id}", "status": "created", "updated_at": now,
            "upi_link": bool(data.get("upi_link", False)), "user_id": "", "whatsapp_link": False,
        }
        if data.get("callback_url"):
            link.update(callback_url=data["callback_url"], callback_method="get")
        self.links[plink_id] = link
        self._link_key[plink_id] = call.key_id
        if reference:
            self._references.add(reference)
        return link

    def _link(self, plink_id: str) -> dict:
        if plink_id not in self.links:
            raise ApiError("The id provided does not exist", "id")
        return self.links[plink_id]

    def _fetch_link(self, call: Call, plink_id: str) -> dict:
        return self._link(plink_id)

    def _list_links(self, call: Call) -> dict:
        links = sorted(self.links.values(), key=lambda link: link["created_at"], reverse=True)
        if "reference_id" in call.query:
            links = [link for link in links if link["reference_id"] == call.query["reference_id"]]
        if "payment_id" in call.query:
            links = [link for link in links if call.query["payment_id"] in
                     [p["payment_id"] for p in link["payments"] or []]]
        return {"payment_links": links}

    def _cancel_link(self, call: Call, plink_id: str) -> dict:
        link = self._link(plink_id)
        if link["status"] in ("paid", "partially_paid"):
            raise ApiError("cannot cancel or expire an already paid/partially paid link", "id")
        if link["status"] != "created":
            raise ApiError("cannot cancel or expire an expired link", "id")
        now = int(time.time())
        link.update(status="cancelled", cancelled_at=now, updated_at=now)
        self.send_event("payment_link.cancelled", {"payment_link": self._hook_link(link)})
        return link

    @staticmethod
    def _hook_link(link: dict) -> dict:
        """The link as webhook payloads carry it (no `payments` list there)."""
        return {"entity": {k: v for k, v in link.items() if k != "payments"}}

    # ---- orders and payments ---------------------------------------------------------------

    def _order_for(self, link: dict) -> dict:
        """The order Razorpay opens behind a payment link when the payer first tries to pay."""
        if "order_id" not in link:
            order = {"id": new_id("order_"), "entity": "order", "amount": link["amount"],
                     "amount_paid": 0, "amount_due": link["amount"],
                     "currency": link["currency"], "receipt": link["reference_id"] or None,
                     "offer_id": None, "status": "created", "attempts": 0,
                     "notes": link["notes"] or [], "created_at": int(time.time())}
            self.orders[order["id"]] = order
            link["order_id"] = order["id"]
        return self.orders[link["order_id"]]

    @staticmethod
    def _hook_order(order: dict, link: dict) -> dict:
        """The order as the payment_link.* samples show it: id without `order_`, no `entity`."""
        entity = {k: v for k, v in order.items() if k not in ("entity", "offer_id")}
        entity.update(id=order["id"][len("order_"):], product_id=link["id"][len("plink_"):],
                      product_type="payment_link_v2", payment_capture=True,
                      authorized=order["amount_paid"] > 0, partial_payment=link["accept_partial"],
                      updated_at=int(time.time()))
        return {"entity": entity}

    def _new_payment(self, link: dict, order: dict, amount: int, method: str, ok: bool,
                     email: str, contact: str) -> dict:
        now = int(time.time())
        payment = {
            "id": new_id("pay_"), "entity": "payment", "amount": amount,
            "currency": link["currency"], "status": "captured" if ok else "failed",
            "order_id": order["id"], "invoice_id": None, "international": False,
            "method": method, "amount_refunded": 0, "refund_status": None, "captured": ok,
            "description": "#" + link["id"][len("plink_"):], "card_id": None, "bank": None,
            "wallet": None, "vpa": None, "email": email, "contact": contact,
            "notes": link["notes"] or [], "fee": amount * 236 // 10000 if ok else None,
            "tax": amount * 36 // 10000 if ok else None, "error_code": None,
            "error_description": None, "error_source": None, "error_step": None,
            "error_reason": None, "acquirer_data": {}, "created_at": now,
        }
        if method == "card":
            card_id = new_id("card_")
            payment.update(card_id=card_id, acquirer_data={"auth_code": "828553"}, card={
                "id": card_id, "entity": "card", "name": "", "last4": "1111", "network": "Visa",
                "type": "credit", "issuer": None, "international": False, "emi": False,
                "sub_type": "consumer"})
        else:
            vpa = "success@razorpay" if ok else "failure@razorpay"
            payment.update(vpa=vpa, acquirer_data={"rrn": str(secrets.randbelow(10 ** 12))},
                           upi={"payer_account_type": "bank_account", "vpa": vpa})
        if not ok:
            payment.update(error_code="BAD_REQUEST_ERROR", error_description="Payment failed",
                           error_source="bank", error_step="payment_authorization",
                           error_reason="payment_failed")
        self.payments[payment["id"]] = payment
        return payment

    def _payment(self, pay_id: str) -> dict:
        if pay_id not in self.payments:
            raise ApiError("The id provided does not exist", "id")
        return self.payments[pay_id]

    def _fetch_payment(self, call: Call, pay_id: str) -> dict:
        payment = self._payment(pay_id)
        if "card" in call.query.getlist("expand[]"):
            return payment
        return {k: v for k, v in payment.items() if k != "card"}

    def _fetch_card(self, call: Call, pay_id: str) -> dict:
        payment = self._payment(pay_id)
        if "card" not in payment:
            raise ApiError("The payment was not made with a card", "id")
        return payment["card"]

    def _fetch_order(self, call: Call, order_id: str) -> dict:
        if order_id not in self.orders:
            raise ApiError("The id provided does not exist", "id")
        return self.orders[order_id]

    def _list_order_payments(self, call: Call, order_id: str) -> dict:
        self._fetch_order(call, order_id)
        return _collection([{k: v for k, v in p.items() if k != "card"}
                            for p in self.payments.values() if p["order_id"] == order_id])

    # ---- refunds ---------------------------------------------------------------------------

    def _create_refund(self, call: Call, pay_id: str) -> dict:
        key = call.headers.get("X-Refund-Idempotency")
        if key is not None:
            if not IDEMPOTENCY_KEY.match(key):
                raise ApiError("The idempotency key must be at least 10 characters long and only"
                               " contain alphanumeric characters, underscores, and hyphens", **NA)
            if key in self._idempotency:
                first_pay_id, first_body, refund_id = self._idempotency[key]
                if (first_pay_id, first_body) != (pay_id, call.data):
                    raise ApiError("Different request with the same idempotency key has already"
                                   " been processed.", status=409, **NA)
                return self.refunds[refund_id]
        payment = self._payment(pay_id)
        for field in call.data:
            if field not in ("amount", "speed", "notes", "receipt"):
                raise ApiError(f"{field} is/are not required and should not be sent", field)
        if payment["status"] not in ("captured", "refunded"):
            raise ApiError("The payment has not been captured", "id")
        remaining = payment["amount"] - payment["amount_refunded"]
        if remaining <= 0:
            raise ApiError("The payment has been fully refunded already", "id")
        amount = _integer(call.data.get("amount", remaining), "amount")
        if amount < 100:
            raise ApiError(f"The amount must be at least {payment['currency']} 1.00.", "amount")
        if amount > remaining:
            raise ApiError("The refund amount provided is greater than amount captured.",
                           "amount")
        speed = call.data.get("speed", "normal")
        if speed not in ("normal", "optimum"):
            raise ApiError("The selected speed is invalid.", "speed")
        refund = {
            "id": new_id("rfnd_"), "entity": "refund", "amount": amount,
            "currency": payment["currency"], "payment_id": pay_id,
            "notes": call.data.get("notes") or [], "receipt": call.data.get("receipt"),
            "acquirer_data": {"arn": None}, "created_at": int(time.time()), "batch_id": None,
            "status": "pending", "speed_processed": None, "speed_requested": speed,
        }
        self.refunds[refund["id"]] = refund
        payment["amount_refunded"] += amount
        self._refund_state(payment)
        if key is not None:
            self._idempotency[key] = (pay_id, call.data, refund["id"])
        self._send_refund_event("refund.created", refund)
        if self.refunds_settle_immediately:
            self.process_refund(refund["id"])
        return refund

    @staticmethod
    def _refund_state(payment: dict) -> None:
        refunded = payment["amount_refunded"]
        full = refunded >= payment["amount"]
        payment["refund_status"] = None if not refunded else "full" if full else "partial"
        payment["status"] = "refunded" if full else "captured"

    def _send_refund_event(self, event: str, refund: dict) -> None:
        self.send_event(event, {"refund": {"entity": refund},
                                "payment": {"entity": self.payments[refund["payment_id"]]}})

    def _refund(self, refund_id: str) -> dict:
        if refund_id not in self.refunds:
            raise ApiError("The id provided does not exist", "id")
        return self.refunds[refund_id]

    def _fetch_refund(self, call: Call, refund_id: str) -> dict:
        return self._refund(refund_id)

    def _fetch_payment_refund(self, call: Call, pay_id: str, refund_id: str) -> dict:
        refund = self._refund(refund_id)
        if refund["payment_id"] != self._payment(pay_id)["id"]:
            raise ApiError("The id provided does not exist", "id")
        return refund

    def _list_refunds(self, call: Call, pay_id: str) -> dict:
        self._payment(pay_id)
        return _collection([r for r in self.refunds.values() if r["payment_id"] == pay_id][::-1])

    # ---- customers and tokens --------------------------------------------------------------

    def _create_customer(self, call: Call) -> dict:
        data = call.data
        for field in data:
            if field not in ("name", "email", "contact", "fail_existing", "gstin", "notes"):
                raise ApiError(f"{field} is/are not required and should not be sent", field)
        for existing in self.customers.values():
            if (existing["email"], existing["contact"]) == (data.get("email"), data.get("contact")):
                if str(data.get("fail_existing", "1")) in ("0", "False", "false"):
                    return existing
                raise ApiError("Customer already exists for the merchant", "email")
        customer = {"id": new_id("cust_"), "entity": "customer", "name": data.get("name"),
                    "email": data.get("email"), "contact": data.get("contact"),
                    "gstin": data.get("gstin"), "notes": data.get("notes") or [],
                    "created_at": int(time.time())}
        self.customers[customer["id"]] = customer
        return customer

    def _customer(self, cust_id: str) -> dict:
        if cust_id not in self.customers:
            raise ApiError("The id provided does not exist", "id")
        return self.customers[cust_id]

    def _fetch_customer(self, call: Call, cust_id: str) -> dict:
        return self._customer(cust_id)

    def _token(self, cust_id: str, token_id: str) -> dict:
        self._customer(cust_id)
        token = self.tokens.get(token_id)
        if token is None or token["_customer_id"] != cust_id:
            raise ApiError("The id provided does not exist", "id")
        return token

    @staticmethod
    def _public(token: dict) -> dict:
        return {k: v for k, v in token.items() if not k.startswith("_")}

    def _list_tokens(self, call: Call, cust_id: str) -> dict:
        self._customer(cust_id)
        return _collection([self._public(t) for t in self.tokens.values()
                            if t["_customer_id"] == cust_id])

    def _fetch_token(self, call: Call, cust_id: str, token_id: str) -> dict:
        return self._public(self._token(cust_id, token_id))

    def _delete_token(self, call: Call, cust_id: str, token_id: str) -> dict:
        del self.tokens[self._token(cust_id, token_id)["id"]]
        return {"deleted": True}

    # ---- hosted page -----------------------------------------------------------------------

    def _hosted_page(self, request: Request, plink_id: str) -> Response:
        link = self.links.get(plink_id)
        if link is None:
            return Response("<!doctype html><title>Not found</title><p>Invalid link.</p>",
                            status=404, content_type="text/html")
        if request.method == "POST" and link["status"] in ("created", "partially_paid"):
            return self._submit(request, link)
        return self._page(link)

    def _page(self, link: dict, message: str = "") -> Response:
        due = link["amount"] - link["amount_paid"]
        money = f"{link['currency']} {_major(due, link['currency'])}"
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>Pay {html.escape(money)}</title></head><body><main>"
                 f"<h1>{html.escape(link['description'] or 'Payment request')}</h1>"
                 f"<p>Amount: <strong id='amount'>{html.escape(money)}</strong></p>"
                 f"<p>Reference: <span id='reference'>{html.escape(link['reference_id'])}"
                 f"</span></p><p>Status: <span id='status'>{link['status']}</span></p>"]
        if message:
            parts.append(f"<p role='alert' id='message'>{html.escape(message)}</p>")
        if link["status"] in ("created", "partially_paid"):
            partial = (f"<label>Amount (minor units) <input name='amount' value='{due}'>"
                       "</label>" if link["accept_partial"] else "")
            parts.append(
                "<form method='post'><label>Method <select name='method'>"
                "<option value='card'>Card</option><option value='upi'>UPI</option></select>"
                f"</label>{partial}<button name='outcome' value='pay'>Pay</button>"
                "<button name='outcome' value='decline'>Decline</button></form>")
        else:
            parts.append(f"<p id='closed'>This payment link is {link['status']}.</p>")
        parts.append("</main></body></html>")
        return Response("".join(parts), content_type="text/html")

    def _submit(self, request: Request, link: dict) -> Response:
        form = request.form
        method = form.get("method", "card")
        if form.get("outcome") not in ("pay", "decline") or method not in ("card", "upi"):
            return self._page(link, "Choose Pay or Decline.")
        due = link["amount"] - link["amount_paid"]
        amount = due
        if link["accept_partial"] and form.get("amount"):
            amount = int(form["amount"]) if form["amount"].isdigit() else 0
            minimum = link["first_min_partial_amount"] if not link["amount_paid"] else 100
            if not min(minimum, due) <= amount <= due:
                return self._page(link, f"Enter an amount between {min(minimum, due)} and {due}.")
        customer = link["customer"]
        email = form.get("email") or customer.get("email") or "void@razorpay.com"
        contact = form.get("contact") or customer.get("contact") or "+919000090000"
        order = self._order_for(link)
        order["attempts"] += 1
        ok = form["outcome"] == "pay"
        payment = self._new_payment(link, order, amount, method, ok, email, contact)
        if not ok:
            order["status"] = "attempted"
            self.send_event("payment.failed", {"payment": {"entity": payment}})
            return self._page(link, "Payment failed. Your payment could not be completed.")
        now = int(time.time())
        link["amount_paid"] += amount
        link["status"] = "paid" if link["amount_paid"] >= link["amount"] else "partially_paid"
        link["updated_at"] = now
        link["payments"] = (link["payments"] or []) + [{
            "amount": amount, "created_at": now, "method": method, "payment_id": payment["id"],
            "plink_id": link["id"], "status": "captured", "updated_at": now}]
        order.update(amount_paid=link["amount_paid"], amount_due=link["amount"] -
                     link["amount_paid"], status="paid" if link["status"] == "paid" else
                     "attempted")
        self.send_event("payment.captured", {"payment": {"entity": payment}})
        self.send_event(f"payment_link.{link['status']}", {
            "payment_link": self._hook_link(link), "order": self._hook_order(order, link),
            "payment": {"entity": payment}})
        if not link.get("callback_url"):
            return self._page(link, f"Payment {payment['id']} successful.")
        secret = self.keys[self._link_key[link["id"]]]
        query = urlencode({
            "razorpay_payment_id": payment["id"], "razorpay_payment_link_id": link["id"],
            "razorpay_payment_link_reference_id": link["reference_id"],
            "razorpay_payment_link_status": link["status"],
            "razorpay_signature": sign_payment_link_return(
                secret, link["id"], link["reference_id"], link["status"], payment["id"])})
        separator = "&" if "?" in link["callback_url"] else "?"
        return Response(status=302, headers={"Location": link["callback_url"] + separator + query})

    # ---- webhook delivery ------------------------------------------------------------------

