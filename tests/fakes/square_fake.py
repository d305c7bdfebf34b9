"""A stateful fake of Square's Checkout, Orders, Payments, Refunds and Locations APIs.

Shapes follow square/square-python-sdk (src/square/types/{payment_link,order,payment,
payment_refund,location,error}.py, the payment_links/orders/payments/refunds raw clients) and
Square's webhook docs: events are signed `x-square-hmacsha256-signature` = base64 HMAC-SHA256 of
the subscription's notification URL followed by the raw body, keyed with its signature key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
LINK_FIELDS = {"idempotency_key", "description", "quick_pay", "order", "checkout_options",
               "pre_populated_data", "payment_note"}
CHECKOUT_OPTIONS = {"allow_tipping", "custom_fields", "subscription_plan_id", "redirect_url",
                    "merchant_support_email", "ask_for_shipping_address",
                    "accepted_payment_methods", "app_fee_money", "shipping_fee",
                    "enable_coupon", "enable_loyalty"}
REFUND_FIELDS = {"idempotency_key", "amount_money", "app_fee_money", "payment_id", "reason",
                 "payment_version_token", "location_id", "customer_id", "team_member_id",
                 "destination_id", "unlinked"}
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
ZERO_DECIMAL = {"JPY", "KRW"}


def new_id(length: int = 29, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sign_webhook(signature_key: str, notification_url: str, body: bytes) -> str:
    """Square's way: base64(HMAC-SHA256(key, notification URL + raw body))."""
    digest = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def error(category: str, code: str, detail: str, field: str | None = None) -> dict:
    err = {"category": category, "code": code, "detail": detail}
    if field:
        err["field"] = field
    return err


class ApiError(Exception):
    def __init__(self, detail: str, code: str = "INVALID_VALUE", status: int = 400,
                 category: str = "INVALID_REQUEST_ERROR", field: str | None = None):
        super().__init__(detail)
        self.status = status
        self.body = {"errors": [error(category, code, detail, field)]}


def not_found(what: str) -> ApiError:
    return ApiError(f"Could not find {what}.", "NOT_FOUND", 404)


class SentEvent(NamedTuple):
    url: str
    type: str
    body: bytes
    status: int | None  # None when the connection failed
    headers: dict

    @property
    def json(self) -> dict:
        return json.loads(self.body)


API = Map([Rule(path, methods=[method], endpoint=endpoint) for method, path, endpoint in [
    ("POST", "/v2/online-checkout/payment-links", "create_link"),
    ("GET", "/v2/online-checkout/payment-links/<link_id>", "get_link"),
    ("DELETE", "/v2/online-checkout/payment-links/<link_id>", "delete_link"),
    ("GET", "/v2/orders/<order_id>", "get_order"),
    ("GET", "/v2/payments/<payment_id>", "get_payment"),
    ("POST", "/v2/refunds", "refund_payment"),
    ("GET", "/v2/refunds/<refund_id>", "get_refund"),
    ("GET", "/v2/locations/<location_id>", "get_location"),
]])


def _money(value: Any, field: str, currency: str) -> dict:
    if not isinstance(value, dict):
        raise ApiError("Missing required parameter.", "MISSING_REQUIRED_PARAMETER", field=field)
    amount = value.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ApiError(f"Expected an integer value for {field}.amount.", "EXPECTED_INTEGER",
                       field=f"{field}.amount")
    if amount < 1:
        raise ApiError("Amount must be greater than 0.", "INVALID_VALUE", field=f"{field}.amount")
    if value.get("currency") != currency:
        raise ApiError(f"This merchant can only process payments in {currency}.",
                       "INVALID_VALUE", field=f"{field}.currency")
    return {"amount": amount, "currency": currency}


def major(money: dict) -> str:
    places = 0 if money["currency"] in ZERO_DECIMAL else 2
    return f"{money['currency']} {money['amount'] / 10 ** places:.{places}f}"


class FakeSquare(FakeServer):
    def __init__(self, access_token: str = "EAAAl-fake-token", location_id: str = "LFAKE0000001",
                 currency: str = "USD", signature_key: str = "fake-signature-key",
                 location_name: str = "Acme Main") -> None:
        super().__init__()
        self.access_tokens = {access_token}
        self.merchant_id = new_id(13, UPPER)
        self.signature_key = signature_key
        self.locations = {location_id: {
            "id": location_id, "name": location_name, "merchant_id": self.merchant_id,
            "currency": currency, "status": "ACTIVE", "country": "US" if currency == "USD"
            else "GB", "timezone": "UTC", "capabilities": ["CREDIT_CARD_PROCESSING"],
            "type": "PHYSICAL", "business_name": location_name, "created_at": now_rfc3339()}}
        self.refunds_settle_immediately = False
        self.append_return_params = True  # production appends orderId; the sandbox does not
        self.webhook_delay = 0.1
        self.webhooks: list[tuple[str, str]] = []
        self.sent_events: list[SentEvent] = []
        self.links: dict[str, dict] = {}
        self.deleted_links: set[str] = set()
        self.orders: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self._short: dict[str, str] = {}  # short code of the link's URL -> link id
        self._idempotency: dict[tuple[str, str], tuple[dict, dict]] = {}

    # ---- test controls ---------------------------------------------------------------------

    @property
    def location_id(self) -> str:
        return next(iter(self.locations))

    def add_webhook(self, notification_url: str, signature_key: str | None = None) -> None:
        """A webhook subscription: every event goes to `notification_url`, signed over it."""
        self.webhooks.append((notification_url, signature_key or self.signature_key))

    def fail_next(self, status: int, errors: list[dict] | None = None, *,
                  path: str | None = None, after: bool = False, raw: bytes | None = None) -> None:
        """Answer the next /v2 call (whose path starts with `path`) with an error.

        `errors`: Square error objects; `raw`: a non-JSON body (a proxy's HTML page);
        `after=True` does the work first and loses the answer.
        """
        if raw is not None:
            self.add_fault(Fault(path, status, raw, "text/html", after))
            return
        errors = errors or [error("API_ERROR", "INTERNAL_SERVER_ERROR",
                                  "An internal error has occurred.")]
        self.add_fault(Fault(path, status, json.dumps({"errors": errors}).encode(),
                                   after=after))

    def delay_next(self, seconds: float, *, path: str | None = None) -> None:
        self.add_fault(Fault(path, delay=seconds))

    def wait_events(self, count: int, timeout: float = 5.0) -> list[SentEvent]:
        return self.wait_sent(self.sent_events, count, timeout, "webhooks")

    def send_event(self, kind: str, data_type: str, object_id: str, obj: dict) -> bytes:
        """Build, sign and queue an event to every subscription; return the exact body."""
        body = json.dumps({
            "merchant_id": self.merchant_id, "type": kind, "event_id": str(uuid.uuid4()),
            "created_at": now_rfc3339(),
            "data": {"type": data_type, "id": object_id, "object": obj},
        }, separators=(",", ":")).encode()
        for url, key in self.webhooks:
            headers = {"Content-Type": "application/json", "Square-Environment": "Sandbox",
                       "Square-Initial-Delivery-Timestamp": now_rfc3339(),
                       "Square-Retry-Number": "0",
                       "x-square-hmacsha256-signature": sign_webhook(key, url, body)}
            self.post_later(self.webhook_delay, url, body, headers, self.sent_events,
                            partial(SentEvent, url, kind, body, headers=headers))
        return body

    def complete_refund(self, refund_id: str, ok: bool = True) -> dict:
        """Settle a pending refund (COMPLETED or FAILED) and send refund.updated."""
        with self.lock:
            refund = self.refunds[refund_id]
            if refund["status"] != "PENDING":
                raise ValueError(f"refund {refund_id} is already {refund['status']}")
            refund.update(status="COMPLETED" if ok else "FAILED", updated_at=now_rfc3339())
            payment = self.payments[refund["payment_id"]]
            if not ok:
                payment["refunded_money"]["amount"] -= refund["amount_money"]["amount"]
            self._send_refund("refund.updated", refund)
            return dict(refund)

    # ---- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/u/"):
            return self._hosted_page(request, request.path[len("/u/"):])
        if not request.path.startswith("/v2/"):
            return Response("Not Found", status=404)
        return self.with_faults(request.path, lambda: self._locked_api(request))

    def _locked_api(self, request: Request) -> Response:
        with self.lock:
            return self._api(request)

    def _api(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            try:
                endpoint, args = API.bind("fake").match(request.path, request.method)
            except HTTPException:
                raise not_found("the requested resource") from None
            data = self._body(request)
            return self._json(getattr(self, f"_{endpoint}")(data, **args))
        except ApiError as exc:
            return self._json(exc.body, exc.status)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not any(hmac.compare_digest(token, t)
                                         for t in self.access_tokens):
            raise ApiError("This request could not be authorized.", "UNAUTHORIZED", 401,
                           "AUTHENTICATION_ERROR")

    @staticmethod
    def _body(request: Request) -> dict:
        if request.method in ("GET", "DELETE"):
            return {}
        try:
            data = json.loads(request.get_data() or b"{}")
        except ValueError:
            raise ApiError("Invalid JSON in request body.", "INVALID_CONTENT_TYPE") from None
        if not isinstance(data, dict):
            raise ApiError("Expected a JSON object.", "EXPECTED_JSON_BODY")
        return data

    def _idempotent(self, endpoint: str, key: str, data: dict, make) -> dict:
        if key and (endpoint, key) in self._idempotency:
            first, answer = self._idempotency[(endpoint, key)]
            if first != data:
                raise ApiError("The idempotency key can only be retried with the same request "
                               "data.", "IDEMPOTENCY_KEY_REUSED", field="idempotency_key")
            return answer
        answer = make()
        if key:
            self._idempotency[(endpoint, key)] = (data, answer)
        return answer

    # ---- payment links and orders ----------------------------------------------------------

    def _create_link(self, data: dict) -> dict:
        unknown = sorted(set(data) - LINK_FIELDS)
        if unknown:
            raise ApiError(f"Unrecognized field `{unknown[0]}`.", "BAD_REQUEST", field=unknown[0])
        key = data.get("idempotency_key") or ""
        if len(key) > 192:
            raise ApiError("Field must not be greater than 192 length", "VALUE_TOO_LONG",
                           field="idempotency_key")
        return self._idempotent("link", key, data, lambda: self._new_link(data))

    def _new_link(self, data: dict) -> dict:
        if ("quick_pay" in data) == ("order" in data):
            raise ApiError("Exactly one of quick_pay or order must be provided.",
                           "INVALID_REQUEST")
        if "order" in data:
            raise ApiError("Only quick_pay links are supported by this fake.", "BAD_REQUEST")
        quick = data["quick_pay"]
        location = self.locations.get(quick.get("location_id"))
        if location is None:
            raise ApiError("Location not found.", "NOT_FOUND", 400, field="quick_pay.location_id")
        name = quick.get("name")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ApiError("Invalid name.", "INVALID_VALUE", field="quick_pay.name")
        price = _money(quick.get("price_money"), "quick_pay.price_money", location["currency"])
        options = data.get("checkout_options") or {}
        unknown = sorted(set(options) - CHECKOUT_OPTIONS)
        if unknown:
            raise ApiError(f"Unrecognized field `{unknown[0]}`.", "BAD_REQUEST",
                           field=f"checkout_options.{unknown[0]}")
        redirect = options.get("redirect_url")
        if redirect is not None and (not str(redirect).startswith(("http://", "https://"))
                                     or len(redirect) > 2048):
            raise ApiError("Invalid redirect URL.", "INVALID_URL",
                           field="checkout_options.redirect_url")
        buyer = data.get("pre_populated_data") or {}
        phone = buyer.get("buyer_phone_number")
        if phone is not None and not E164.match(phone):
            raise ApiError("Invalid phone number.", "INVALID_PHONE_NUMBER",
                           field="pre_populated_data.buyer_phone_number")
        note = data.get("payment_note")
        if note is not None and len(note) > 500:
            raise ApiError("Field must not be greater than 500 length", "VALUE_TOO_LONG",
                           field="payment_note")
        created = now_rfc3339()
        order = {
            "id": new_id(29), "location_id": location["id"], "source": {"name": "Fake app"},
            "line_items": [{"uid": new_id(22), "name": name, "quantity": "1",
                            "item_type": "ITEM", "base_price_money": price,
                            "variation_total_price_money": price,
                            "gross_sales_money": price, "total_money": price,
                            "total_tax_money": {"amount": 0, "currency": price["currency"]},
                            "total_discount_money": {"amount": 0,
                                                     "currency": price["currency"]}}],
            "net_amounts": {"total_money": price}, "created_at": created,
            "updated_at": created, "state": "DRAFT", "version": 1, "total_money": price,
            "total_tax_money": {"amount": 0, "currency": price["currency"]},
            "net_amount_due_money": price, "tenders": [],
        }
        link_id, short = new_id(16, UPPER), new_id(8)
        link = {"id": link_id, "version": 1, "order_id": order["id"],
                "url": f"{self.url}/u/{short}",
                "long_url": f"{self.url}/u/{short}?src=api", "created_at": created}
        for field in ("description", "payment_note"):
            if data.get(field):
                link[field] = data[field]
        if options:
            link["checkout_options"] = dict(options)
        if buyer:
            link["pre_populated_data"] = dict(buyer)
        self.orders[order["id"]] = order
        self.links[link_id] = link
        self._short[short] = link_id
        return {"payment_link": link, "related_resources": {"orders": [order]}}

    def _link(self, link_id: str) -> dict:
        if link_id not in self.links:
            raise not_found(f"payment link {link_id}")
        return self.links[link_id]

    def _get_link(self, data: dict, link_id: str) -> dict:
        return {"payment_link": self._link(link_id)}

    def _delete_link(self, data: dict, link_id: str) -> dict:
        link = self._link(link_id)
        del self.links[link_id]
        self.deleted_links.add(link_id)
        order = self.orders[link["order_id"]]
        answer = {"id": link_id}
        if order["state"] == "DRAFT":
            order.update(state="CANCELED", version=order["version"] + 1,
                         updated_at=now_rfc3339(), closed_at=now_rfc3339())
            answer["cancelled_order_id"] = order["id"]
            self._send_order_updated(order)
        return answer

    def _get_order(self, data: dict, order_id: str) -> dict:
        if order_id not in self.orders:
            raise not_found(f"order {order_id}")
        return {"order": self.orders[order_id]}

    def _send_order_updated(self, order: dict) -> None:
        self.send_event("order.updated", "order_updated", order["id"], {"order_updated": {
            "order_id": order["id"], "location_id": order["location_id"],
            "state": order["state"], "version": order["version"],
            "created_at": order["created_at"], "updated_at": order["updated_at"]}})

    # ---- payments and refunds --------------------------------------------------------------

    def _get_payment(self, data: dict, payment_id: str) -> dict:
        if payment_id not in self.payments:
            raise not_found(f"payment {payment_id}")
        return {"payment": self.payments[payment_id]}

    def _new_payment(self, link: dict, order: dict, ok: bool, email: str) -> dict:
        created = now_rfc3339()
        price = order["total_money"]
        payment = {
            "id": new_id(29), "created_at": created, "updated_at": created,
            "amount_money": dict(price), "total_money": dict(price),
            "approved_money": dict(price) if ok else {"amount": 0,
                                                      "currency": price["currency"]},
            "status": "COMPLETED" if ok else "FAILED", "delay_duration": "PT168H",
            "source_type": "CARD", "location_id": order["location_id"],
            "order_id": order["id"], "buyer_email_address": email,
            "card_details": {
                "status": "CAPTURED" if ok else "FAILED", "entry_method": "KEYED",
                "cvv_status": "CVV_ACCEPTED", "avs_status": "AVS_ACCEPTED",
                "card": {"card_brand": "VISA", "last_4": "1111", "exp_month": 12,
                         "exp_year": 2030, "fingerprint": "sq-1-" + new_id(40),
                         "card_type": "CREDIT", "prepaid_type": "NOT_PREPAID",
                         "bin": "411111"}},
            "receipt_number": "", "version_token": new_id(40),
            "capabilities": ["EDIT_AMOUNT_UP", "EDIT_AMOUNT_DOWN"],
            "application_details": {"square_product": "ECOMMERCE_API",
                                    "application_id": "sq0idp-fake"},
        }
        if link.get("payment_note"):
            payment["note"] = link["payment_note"]
        if ok:
            payment["receipt_number"] = payment["id"][:4]
            payment["receipt_url"] = f"{self.url}/receipt/{payment['id']}"
        else:
            payment["card_details"]["errors"] = [error(
                "PAYMENT_METHOD_ERROR", "GENERIC_DECLINE",
                "Authorization error: 'GENERIC_DECLINE'")]
        self.payments[payment["id"]] = payment
        return payment

    def _refund_payment(self, data: dict) -> dict:
        unknown = sorted(set(data) - REFUND_FIELDS)
        if unknown:
            raise ApiError(f"Unrecognized field `{unknown[0]}`.", "BAD_REQUEST", field=unknown[0])
        key = data.get("idempotency_key")
        if not key:
            raise ApiError("Missing required parameter.", "MISSING_REQUIRED_PARAMETER",
                           field="idempotency_key")
        if len(key) > 45:
            raise ApiError("Field must not be greater than 45 length", "VALUE_TOO_LONG",
                           field="idempotency_key")
        return self._idempotent("refund", key, data, lambda: self._new_refund(data))

    def _new_refund(self, data: dict) -> dict:
        payment = self.payments.get(data.get("payment_id") or "")
        if payment is None:
            raise not_found(f"payment {data.get('payment_id')}")
        if payment["status"] != "COMPLETED":
            raise ApiError("Payment must be completed to be refunded.", "INVALID_VALUE",
                           category="REFUND_ERROR")
        money = _money(data.get("amount_money"), "amount_money",
                       payment["total_money"]["currency"])
        refunded = payment.get("refunded_money", {}).get("amount", 0)
        if money["amount"] > payment["total_money"]["amount"] - refunded:
            raise ApiError("The requested refund amount exceeds the amount available to "
                           "refund.", "REFUND_AMOUNT_INVALID", category="REFUND_ERROR",
                           field="amount_money.amount")
        created = now_rfc3339()
        refund = {"id": f"{payment['id']}_{new_id(29)}", "status": "PENDING",
                  "amount_money": money, "payment_id": payment["id"],
                  "order_id": payment["order_id"], "location_id": payment["location_id"],
                  "created_at": created, "updated_at": created,
                  "destination_type": "CARD"}
        if data.get("reason"):
            refund["reason"] = data["reason"]
        self.refunds[refund["id"]] = refund
        payment["refunded_money"] = {"amount": refunded + money["amount"],
                                     "currency": money["currency"]}
        payment.setdefault("refund_ids", []).append(refund["id"])
        self._send_refund("refund.created", refund)
        if self.refunds_settle_immediately:
            refund["status"] = "COMPLETED"
            self._send_refund("refund.updated", refund)
        return {"refund": dict(refund)}

    def _get_refund(self, data: dict, refund_id: str) -> dict:
        if refund_id not in self.refunds:
            raise not_found(f"refund {refund_id}")
        return {"refund": self.refunds[refund_id]}

    def _send_refund(self, kind: str, refund: dict) -> None:
        self.send_event(kind, "refund", refund["id"], {"refund": dict(refund)})

    def _get_location(self, data: dict, location_id: str) -> dict:
        if location_id not in self.locations:
            raise not_found(f"location {location_id}")
        return {"location": self.locations[location_id]}

    # ---- hosted checkout page --------------------------------------------------------------

    def _hosted_page(self, request: Request, short: str) -> Response:
        with self.lock:
            link = self.links.get(self._short.get(short, ""))
            if link is None:  # deleted (or never made): a late payment cannot happen
                return Response("<!doctype html><title>Link unavailable</title>"
                                "<p>This checkout link is no longer available.</p>",
                                status=404, content_type="text/html")
            order = self.orders[link["order_id"]]
            if request.method == "POST" and order["state"] == "DRAFT":
                return self._submit(request, link, order)
            return self._page(link, order)

    def _page(self, link: dict, order: dict, message: str = "") -> Response:
        item = order["line_items"][0]
        money = major(order["total_money"])
        email = (link.get("pre_populated_data") or {}).get("buyer_email", "")
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>Pay {html.escape(money)}</title></head><body><main>"
                 f"<h1>{html.escape(item['name'])}</h1>"
                 f"<p>Total: <strong id='amount'>{html.escape(money)}</strong></p>"]
        if message:
            parts.append(f"<p role='alert'>{html.escape(message)}</p>")
        if order["state"] == "DRAFT":
            parts.append(
                "<form method='post'><label>Email <input name='email' "
                f"value='{html.escape(email)}'></label><label>Card number "
                "<input name='card_number' value='4111 1111 1111 1111'></label>"
                "<button name='outcome' value='pay'>Pay</button>"
                "<button name='outcome' value='decline'>Decline</button></form>")
        else:
            parts.append(f"<p id='closed'>This order is {order['state'].lower()}.</p>")
        parts.append("</main></body></html>")
        return Response("".join(parts), content_type="text/html")

    def _submit(self, request: Request, link: dict, order: dict) -> Response:
        outcome = request.form.get("outcome")
        if outcome not in ("pay", "decline"):
            return self._page(link, order, "Choose Pay or Decline.")
        ok = outcome == "pay"
        payment = self._new_payment(link, order, ok, request.form.get("email", ""))
        if not ok:
            self.send_event("payment.created", "payment", payment["id"],
                            {"payment": dict(payment)})
            return self._page(link, order, "Your card was declined. Try another card.")
        # Square authorises, then captures: payment.created (APPROVED), payment.updated.
        self.send_event("payment.created", "payment", payment["id"], {"payment": {
            **payment, "status": "APPROVED",
            "card_details": {**payment["card_details"], "status": "AUTHORIZED"}}})
        self.send_event("payment.updated", "payment", payment["id"], {"payment": dict(payment)})
        updated = now_rfc3339()
        order.update(state="OPEN", version=order["version"] + 1, updated_at=updated,
                     net_amount_due_money={"amount": 0,
                                           "currency": order["total_money"]["currency"]},
                     tenders=[{"id": payment["id"], "location_id": order["location_id"],
                               "transaction_id": order["id"], "created_at": updated,
                               "amount_money": payment["amount_money"], "type": "CARD",
                               "card_details": {"status": "CAPTURED",
                                                "card": payment["card_details"]["card"],
                                                "entry_method": "KEYED"},
                               "payment_id": payment["id"]}])
        self._send_order_updated(order)
        redirect = (link.get("checkout_options") or {}).get("redirect_url")
        if not redirect:
            return self._page(link, order, "Payment successful.")
        if self.append_return_params:
            separator = "&" if "?" in redirect else "?"
            redirect += f"{separator}checkoutId={link['id']}&orderId={order['id']}" \
                        f"&transactionId={order['id']}"
        return Response(status=302, headers={"Location": redirect})

    # ---- webhook delivery ------------------------------------------------------------------

