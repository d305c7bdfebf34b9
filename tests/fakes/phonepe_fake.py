"""A stateful fake of PhonePe's v2 Standard Checkout API, OAuth and hosted page on one base.

Shapes follow PhonePe/phonepe-pg-sdk-python (token service, standard checkout client and its
callback samples) and developer.phonepe.com (pay, order status, refund, refund status,
webhooks). Callbacks carry `Authorization: sha256_hex("username:password")` as PhonePe sends.
Error bodies use PhonePe's `{"success": false, "code", "message"}` shape; the exact codes for
each refusal are not published, so the ones here are plausible names, not PhonePe's list.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import time
from functools import partial
from typing import Any, NamedTuple
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

MERCHANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
DEFAULT_EXPIRE_AFTER = 1200
TOKEN_LIFETIME = 3600


def callback_authorization(username: str, password: str) -> str:
    return hashlib.sha256(f"{username}:{password}".encode()).hexdigest()


def new_id(prefix: str) -> str:
    return prefix + time.strftime("%y%m%d%H%M%S") + "".join(
        secrets.choice("0123456789") for _ in range(10))


def now_ms() -> int:
    return int(time.time() * 1000)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"success": False, "code": code, "message": message}


class SentCallback(NamedTuple):
    url: str
    event: str
    body: bytes
    status: int | None  # None when the connection failed
    headers: dict

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class FakePhonePe(FakeServer):
    def __init__(self, clients: dict[str, tuple[str, str]] | None = None,
                 merchant_id: str = "M22PORTALUAT") -> None:
        super().__init__()
        self.clients = dict(clients or {"PORTAL_CLIENT": ("client-secret", "1")})
        self.merchant_id = merchant_id
        self.token_lifetime = TOKEN_LIFETIME
        self.refunds_settle_immediately = False
        self.refuse_tokens = False  # every PG call answers 401, fresh token or not
        self.callback_delay = 0.2
        self.webhooks: list[tuple[str, str]] = []  # (url, Authorization value)
        self.sent_callbacks: list[SentCallback] = []
        self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (client id, expiry)
        self.orders: dict[str, dict] = {}  # merchantOrderId -> order (with private "_" keys)
        self.refunds: dict[str, dict] = {}  # merchantRefundId -> refund
        self._pages: dict[str, str] = {}  # hosted-page token -> merchantOrderId

    # ---- test controls ---------------------------------------------------------------------

    def add_webhook(self, url: str, username: str, password: str) -> None:
        """The dashboard's webhook: URL plus the username and password PhonePe hashes."""
        self.webhooks.append((url, callback_authorization(username, password)))

    def fail_next(self, status: int, code: str = "INTERNAL_SERVER_ERROR",
                  message: str = "Something went wrong", *, path: str | None = None,
                  after: bool = False, raw: bytes | None = None) -> None:
        """Answer the next call (whose path starts with `path`) with an error.

        `raw`: a non-JSON body (a proxy's HTML page); `after=True` does the work, loses the answer.
        """
        if raw is not None:
            self.add_fault(Fault(path, status, raw, "text/html", after))
            return
        body = json.dumps({"success": False, "code": code, "message": message}).encode()
        self.add_fault(Fault(path, status, body, after=after))

    def delay_next(self, seconds: float, *, path: str | None = None) -> None:
        self.add_fault(Fault(path, delay=seconds))

    def revoke_tokens(self) -> None:
        """Every issued token stops working (as after PhonePe rotates them)."""
        with self.lock:
            self.tokens.clear()

    def wait_callbacks(self, count: int, timeout: float = 5.0) -> list[SentCallback]:
        return self.wait_sent(self.sent_callbacks, count, timeout, "callbacks")

    def send_callback(self, event: str, payload: dict, *,
                      authorization: str | None = None) -> bytes:
        """Queue a callback to every webhook (or with a chosen Authorization); returns the body."""
        kind = event.upper().replace(".", "_")
        body = json.dumps({"event": event, "type": kind, "payload": payload},
                          separators=(",", ":")).encode()
        for url, auth in self.webhooks:
            headers = {"Content-Type": "application/json",
                       "Authorization": authorization if authorization is not None else auth}
            self.post_later(self.callback_delay, url, body, headers, self.sent_callbacks,
                            partial(SentCallback, url, event, body, headers=headers))
        return body

    def settle_refund(self, merchant_refund_id: str, ok: bool = True) -> dict:
        with self.lock:
            refund = self.refunds[merchant_refund_id]
            if refund["state"] not in ("PENDING", "CONFIRMED"):
                raise ValueError(f"refund {merchant_refund_id} is already {refund['state']}")
            refund.update(state="COMPLETED" if ok else "FAILED", timestamp=now_ms())
            if not ok:
                refund.update(errorCode="REFUND_FAILED", detailedErrorCode="BANK_DECLINED")
                self.orders[refund["originalMerchantOrderId"]]["_refunded"] -= refund["amount"]
            self.send_callback(f"pg.refund.{'completed' if ok else 'failed'}",
                               self._refund_payload(refund))
            return dict(refund)

    def expire(self, merchant_order_id: str) -> None:
        with self.lock:
            order = self.orders[merchant_order_id]
            order.update(state="FAILED", errorCode="TXN_EXPIRED",
                         detailedErrorCode="ORDER_EXPIRED")
            self.send_callback("checkout.order.failed", self._order_payload(order))

    # ---- HTTP ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/transact/v2":
            with self.lock:
                return self._hosted_page(request)
        return self.with_faults(request.path, lambda: self._locked_api(request))

    def _locked_api(self, request: Request) -> Response:
        with self.lock:
            return self._api(request)

    def _api(self, request: Request) -> Response:
        path, method = request.path, request.method
        try:
            if (method, path) == ("POST", "/v1/oauth/token"):
                return self._json(self._token(request))
            client_id = self._authenticate(request)
            if (method, path) == ("POST", "/checkout/v2/pay"):
                return self._json(self._pay(client_id, self._body(request)))
            if match := re.fullmatch(r"/checkout/v2/order/([^/]+)/status", path):
                if method == "GET":
                    return self._json(self._order_status(match[1], request.args))
            if (method, path) == ("POST", "/payments/v2/refund"):
                return self._json(self._refund(self._body(request)))
            if match := re.fullmatch(r"/payments/v2/refund/([^/]+)/status", path):
                if method == "GET":
                    return self._json(self._refund_status(match[1]))
            raise ApiError(404, "NOT_FOUND", "No such API")
        except ApiError as exc:
            return self._json(exc.body, exc.status)

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    @staticmethod
    def _body(request: Request) -> dict:
        if request.mimetype != "application/json":
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be JSON")
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            raise ApiError(400, "BAD_REQUEST", "Body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BAD_REQUEST", "Body is not a JSON object")
        return body

    # ---- OAuth -----------------------------------------------------------------------------

    def _token(self, request: Request) -> dict:
        form = request.form
        if request.mimetype != "application/x-www-form-urlencoded":
            raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE", "Form expected")
        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, "INVALID_GRANT", "grant_type must be client_credentials")
        client = self.clients.get(form.get("client_id", ""))
        if (client is None or not hmac.compare_digest(client[0], form.get("client_secret", ""))
                or form.get("client_version") != client[1]):
            raise ApiError(401, "INVALID_CLIENT", "Client authentication failed")
        issued = int(time.time())
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (form["client_id"], issued + self.token_lifetime)
        return {"access_token": token, "encrypted_access_token": secrets.token_urlsafe(24),
                "expires_in": None, "issued_at": issued,
                "expires_at": issued + self.token_lifetime,
                "session_expires_at": issued + self.token_lifetime,
                "token_type": "O-Bearer", "refresh_token": None}

    def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        client_id, expires = self.tokens.get(token, (None, 0.0)) if scheme == "O-Bearer" \
            else (None, 0.0)
        if client_id is None or time.time() >= expires or self.refuse_tokens:
            raise ApiError(401, "UNAUTHORIZED", "Authorization failed")
        return client_id

    # ---- orders ----------------------------------------------------------------------------

    def _pay(self, client_id: str, data: dict) -> dict:
        order_id_ = data.get("merchantOrderId")
        if not isinstance(order_id_, str) or not MERCHANT_ID_PATTERN.match(order_id_):
            raise ApiError(400, "BAD_REQUEST", "merchantOrderId is invalid")
        if order_id_ in self.orders:
            raise ApiError(409, "DUPLICATE_ORDER", "merchantOrderId already used")
        amount = data.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            raise ApiError(400, "BAD_REQUEST", "amount must be at least 100 paise")
        expire_after = data.get("expireAfter", DEFAULT_EXPIRE_AFTER)
        if not isinstance(expire_after, int) or not 300 <= expire_after <= 3600:
            raise ApiError(400, "BAD_REQUEST", "expireAfter must be between 300 and 3600")
        flow = data.get("paymentFlow") or {}
        redirect = (flow.get("merchantUrls") or {}).get("redirectUrl")
        if flow.get("type") != "PG_CHECKOUT" or not isinstance(redirect, str) \
                or not redirect.startswith(("http://", "https://")):
            raise ApiError(400, "BAD_REQUEST", "paymentFlow.merchantUrls.redirectUrl is invalid")
        meta = data.get("metaInfo") or {}
        if not isinstance(meta, dict) or set(meta) - {f"udf{i}" for i in range(1, 16)}:
            raise ApiError(400, "BAD_REQUEST", "metaInfo may hold udf1..udf15 only")
        order = {"orderId": new_id("OMO"), "state": "PENDING", "amount": amount,
                 "expireAt": now_ms() + expire_after * 1000, "metaInfo": meta,
                 "paymentDetails": [], "_redirect": redirect, "_client": client_id,
                 "_refunded": 0, "_merchant_order_id": order_id_}
        self.orders[order_id_] = order
        page = secrets.token_urlsafe(16)
        self._pages[page] = order_id_
        return {"orderId": order["orderId"], "state": "PENDING", "expireAt": order["expireAt"],
                "redirectUrl": f"{self.url}/transact/v2?{urlencode({'token': page})}"}

    def _order_status(self, merchant_order_id: str, args) -> dict:
        order = self.orders.get(merchant_order_id)
        if order is None:
            raise ApiError(404, "ORDER_NOT_FOUND", "No order with this merchantOrderId")
        public = {k: v for k, v in order.items() if not k.startswith("_")}
        if args.get("details") != "true":
            public["paymentDetails"] = order["paymentDetails"][-1:]
        return public

    def _order_payload(self, order: dict) -> dict:
        payload = {"merchantId": self.merchant_id,
                   "merchantOrderId": order["_merchant_order_id"],
                   **{k: v for k, v in order.items() if not k.startswith("_")}}
        payload["paymentDetails"] = order["paymentDetails"][-1:]
        return payload

    # ---- hosted page -----------------------------------------------------------------------

    def _hosted_page(self, request: Request) -> Response:
        merchant_order_id = self._pages.get(request.args.get("token", ""))
        order = self.orders.get(merchant_order_id or "")
        if order is None:
            return Response("<!doctype html><title>Invalid</title><p>Invalid link.</p>",
                            status=404, content_type="text/html; charset=utf-8")
        if request.method == "POST" and order["state"] == "PENDING":
            return self._submit(request, order)
        rupees = f"₹{order['amount'] // 100}.{order['amount'] % 100:02d}"
        parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>PhonePe: pay {rupees}</title></head><body><main>"
                 f"<h1>Pay {html.escape(rupees)}</h1>"
                 f"<p>Order <span id='order'>{html.escape(order['orderId'])}</span>: "
                 f"<span id='state'>{order['state']}</span></p>"]
        if order["state"] == "PENDING":
            parts.append("<form method='post'><label>Pay with <select name='mode'>"
                         "<option value='UPI_QR'>UPI</option><option value='CARD'>Card</option>"
                         "</select></label><button name='outcome' value='pay'>Pay</button>"
                         "<button name='outcome' value='decline'>Decline</button></form>")
        parts.append("</main></body></html>")
        return Response("".join(parts), content_type="text/html; charset=utf-8")

    def _submit(self, request: Request, order: dict) -> Response:
        ok = request.form.get("outcome") == "pay"
        mode = request.form.get("mode", "UPI_QR")
        attempt = {"transactionId": new_id("OM"), "paymentMode": mode, "timestamp": now_ms(),
                   "amount": order["amount"], "payableAmount": order["amount"], "feeAmount": 0,
                   "state": "COMPLETED" if ok else "FAILED"}
        if ok:
            order["state"] = "COMPLETED"
        else:
            attempt.update(errorCode="PAYMENT_ERROR", detailedErrorCode="TXN_AUTO_FAILED")
            order.update(state="FAILED", errorCode="PAYMENT_ERROR",
                         detailedErrorCode="TXN_AUTO_FAILED")
        order["paymentDetails"].append(attempt)
        self.send_callback(f"checkout.order.{'completed' if ok else 'failed'}",
                           self._order_payload(order))
        return Response(status=302, headers={"Location": order["_redirect"]})

    # ---- refunds ---------------------------------------------------------------------------

    def _refund(self, data: dict) -> dict:
        refund_id_ = data.get("merchantRefundId")
        if not isinstance(refund_id_, str) or not MERCHANT_ID_PATTERN.match(refund_id_):
            raise ApiError(400, "BAD_REQUEST", "merchantRefundId is invalid")
        if refund_id_ in self.refunds:
            raise ApiError(409, "DUPLICATE_REFUND", "merchantRefundId already used")
        order = self.orders.get(data.get("originalMerchantOrderId") or "")
        if order is None:
            raise ApiError(400, "ORDER_NOT_FOUND", "originalMerchantOrderId is unknown")
        if order["state"] != "COMPLETED":
            raise ApiError(400, "BAD_REQUEST", "The order is not completed")
        amount = data.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            raise ApiError(400, "BAD_REQUEST", "amount must be at least 100 paise")
        if amount > order["amount"] - order["_refunded"]:
            raise ApiError(400, "INVALID_REFUND_AMOUNT",
                           "Refund amount is more than what remains refundable")
        order["_refunded"] += amount
        refund = {"merchantId": self.merchant_id, "merchantRefundId": refund_id_,
                  "originalMerchantOrderId": order["_merchant_order_id"],
                  "refundId": new_id("OMR"), "amount": amount, "state": "PENDING",
                  "timestamp": now_ms(), "paymentDetails": []}
        self.refunds[refund_id_] = refund
        if self.refunds_settle_immediately:
            refund["state"] = "COMPLETED"
            self.send_callback("pg.refund.completed", self._refund_payload(refund))
        else:
            refund["state"] = "CONFIRMED"
            self.send_callback("pg.refund.accepted", self._refund_payload(refund))
        return {"refundId": refund["refundId"], "amount": amount, "state": "PENDING"}

    def _refund_status(self, merchant_refund_id: str) -> dict:
        refund = self.refunds.get(merchant_refund_id)
        if refund is None:
            raise ApiError(404, "REFUND_NOT_FOUND", "No refund with this merchantRefundId")
        return dict(refund)

    @staticmethod
    def _refund_payload(refund: dict) -> dict:
        return {k: refund[k] for k in ("merchantId", "merchantRefundId",
                                       "originalMerchantOrderId", "refundId", "amount", "state",
                                       "timestamp")}

    # ---- callback delivery -----------------------------------------------------------------

