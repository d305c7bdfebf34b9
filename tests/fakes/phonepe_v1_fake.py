"""A stateful fake of PhonePe's PG v1 API (salt key + X-VERIFY), with a hosted pay page.

Shapes follow developer.phonepe.com/v1/reference (pay-api-1, check-status-api-1,
server-to-server-callback-5, refund-8) and ../shared/reference/gateways.md §3. Every call's
X-VERIFY is checked with the salt its `###` index names; callbacks are signed the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import secrets
import time
from functools import partial
from typing import NamedTuple

from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

TRANSACTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,34}$")
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,35}$")
STATUS_PATH = re.compile(r"^/pg/v1/status/(?P<mid>[^/]+)/(?P<txn>[^/]+)$")
PAY_FIELDS = {"merchantId", "merchantTransactionId", "merchantUserId", "amount", "redirectUrl",
              "redirectMode", "callbackUrl", "mobileNumber", "paymentInstrument",
              "deviceContext"}
REFUND_FIELDS = {"merchantId", "merchantUserId", "originalTransactionId",
                 "merchantTransactionId", "amount", "callbackUrl"}
MESSAGES = {
    "PAYMENT_SUCCESS": "Your payment is successful.",
    "PAYMENT_PENDING": "Your payment is in pending state.",
    "PAYMENT_ERROR": "Payment Failed",
    "TRANSACTION_NOT_FOUND": "No Transaction found with the given details.",
}


def x_verify(message: str, salt_key: str, salt_index: str) -> str:
    return hashlib.sha256((message + salt_key).encode()).hexdigest() + "###" + salt_index


def callback_body(status_body: dict) -> tuple[bytes, str]:
    """The callback's raw body and the base64 `response` PhonePe signs."""
    response = base64.b64encode(json.dumps(status_body).encode()).decode()
    return json.dumps({"response": response}).encode(), response


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"success": False, "code": code, "message": message, "data": {}}


class SentCallback(NamedTuple):
    url: str
    transaction_id: str
    body: bytes
    headers: dict
    status: int | None  # None when the connection failed

    @property
    def decoded(self) -> dict:
        return json.loads(base64.b64decode(json.loads(self.body)["response"]))


class FakePhonePeV1(FakeServer):
    def __init__(self, merchant_id: str = "PGTESTPAYUAT",
                 salts: dict[str, str] | None = None) -> None:
        super().__init__()
        self.merchant_id = merchant_id
        self.salts = dict(salts or {"1": "099eb0cd-02cf-4e2a-8aca-3e6c6aff0399"})
        self.callback_index = next(iter(self.salts))  # the salt that signs callbacks
        self.callback_delay = 0.2
        self.send_callbacks = True
        self.refunds_settle_immediately = False
        self.transactions: dict[str, dict] = {}  # merchantTransactionId -> payment or refund
        self.pages: dict[str, str] = {}  # pay page token -> merchantTransactionId
        self.sent_callbacks: list[SentCallback] = []

    # ---- test controls ---------------------------------------------------------------------

    def fail_next(self, status: int, code: str = "INTERNAL_SERVER_ERROR", message: str = "",
                  *, path: str | None = None, after: bool = False,
                  raw: bytes | None = None) -> None:
        """Answer the next /pg call (whose path starts with `path`) with an error.

        `raw`: a non-JSON body (a proxy's HTML page); `after=True` does the work, loses the answer.
        """
        if raw is not None:
            self.add_fault(Fault(path, status, raw, "text/html", after))
            return
        body = {"success": False, "code": code, "data": {},
                "message": message or "There is an error trying to process your transaction at"
                                      " the moment. Please try again in a while."}
        self.add_fault(Fault(path, status, json.dumps(body).encode(), after=after))

    def delay_next(self, seconds: float, *, path: str | None = None) -> None:
        self.add_fault(Fault(path, delay=seconds))

    def report(self, transaction_id: str, **fields) -> None:
        """Make the status API (and callbacks) report `code` or `amount` other than the truth."""
        with self.lock:
            self.transactions[transaction_id]["_reported"] = fields

    def wait_callbacks(self, count: int, timeout: float = 5.0) -> list[SentCallback]:
        return self.wait_sent(self.sent_callbacks, count, timeout, "callbacks")

    def callback(self, transaction_id: str, *, salt_index: str | None = None,
                 salt_key: str | None = None) -> tuple[bytes, dict]:
        """A callback for the transaction as it stands: (raw body, headers), signed PhonePe's way
        with the salt of `salt_index` (or the given `salt_key`)."""
        index = salt_index or self.callback_index
        body, response = callback_body(self.status_body(transaction_id))
        key = salt_key if salt_key is not None else self.salts[index]
        return body, {"Content-Type": "application/json",
                      "X-VERIFY": x_verify(response, key, index)}

    def process_refund(self, transaction_id: str, ok: bool = True) -> None:
        """Settle a pending refund and send its callback."""
        with self.lock:
            refund = self.transactions[transaction_id]
            if refund["state"] != "PENDING":
                raise ValueError(f"refund {transaction_id} is already {refund['state']}")
            self._finish(refund, ok)
            if not ok:
                self.transactions[refund["original"]]["refunded"] -= refund["amount"]
            self._queue_callback(refund)

    # ---- wire ------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.path == "/transact/pg":
            return self._pay_page(request)
        if not request.path.startswith("/pg/v1/"):
            return Response("<html><body>Not Found</body></html>", 404, content_type="text/html")
        return self.with_faults(request.path, lambda: self._api(request))

    def _api(self, request: Request) -> Response:
        try:
            with self.lock:
                if request.method == "POST" and request.path == "/pg/v1/pay":
                    status, body = 200, self._pay(request)
                elif request.method == "POST" and request.path == "/pg/v1/refund":
                    status, body = 200, self._refund(request)
                elif request.method == "GET" and STATUS_PATH.match(request.path):
                    status, body = 200, self._status(request)
                else:
                    raise ApiError(404, "NOT_FOUND", "Not Found")
        except ApiError as exc:
            status, body = exc.status, exc.body
        return Response(json.dumps(body), status, content_type="application/json")

    def _check(self, request: Request, message: str) -> None:
        """X-VERIFY = SHA256(message + salt) ### index, with the salt the index names."""
        header = request.headers.get("X-VERIFY", "")
        digest, _, index = header.rpartition("###")
        if index not in self.salts:
            raise ApiError(400, "KEY_NOT_CONFIGURED", "Key not found for the merchant")
        if not digest or digest != x_verify(message, self.salts[index], index).split("###")[0]:
            raise ApiError(401, "AUTHORIZATION_FAILED", "X-VERIFY header is incorrect")

    def _decode(self, request: Request, path: str, fields: set[str]) -> dict:
        try:
            encoded = request.get_json(force=True, silent=True)["request"]
            self._check(request, encoded + path)
            payload = json.loads(base64.b64decode(encoded, validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise ApiError(400, "BAD_REQUEST", "Please check the inputs you have provided.") \
                from None
        if not isinstance(payload, dict) or any(v is None for v in payload.values()) or (
                set(payload) - fields):
            raise ApiError(400, "BAD_REQUEST", "Please check the inputs you have provided.")
        if payload.get("merchantId") != self.merchant_id:
            raise ApiError(400, "KEY_NOT_CONFIGURED", "Key not found for the merchant")
        amount = payload.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            raise ApiError(400, "BAD_REQUEST", "Amount should be greater than 100 paise.")
        txn = payload.get("merchantTransactionId")
        if not isinstance(txn, str) or not TRANSACTION_ID.match(txn):
            raise ApiError(400, "BAD_REQUEST", "Invalid merchantTransactionId.")
        if txn in self.transactions:
            raise ApiError(400, "BAD_REQUEST", "Duplicate merchantTransactionId.")
        if not str(payload.get("callbackUrl", "")).startswith(("http://", "https://")):
            raise ApiError(400, "BAD_REQUEST", "Invalid callbackUrl.")
        return payload

    def _pay(self, request: Request) -> dict:
        payload = self._decode(request, "/pg/v1/pay", PAY_FIELDS)
        if payload.get("paymentInstrument") != {"type": "PAY_PAGE"}:
            raise ApiError(400, "BAD_REQUEST", "Unsupported paymentInstrument.")
        if not USER_ID.match(str(payload.get("merchantUserId", ""))):
            raise ApiError(400, "BAD_REQUEST", "merchantUserId is mandatory for PAY_PAGE.")
        if payload.get("redirectMode") not in ("REDIRECT", "POST") or not str(
                payload.get("redirectUrl", "")).startswith(("http://", "https://")):
            raise ApiError(400, "BAD_REQUEST", "Invalid redirectUrl or redirectMode.")
        if "mobileNumber" in payload and not re.fullmatch(r"\d{10}", payload["mobileNumber"]):
            raise ApiError(400, "BAD_REQUEST", "Invalid mobileNumber.")
        txn, token = payload["merchantTransactionId"], secrets.token_urlsafe(24)
        self.transactions[txn] = {
            "kind": "payment", "merchantTransactionId": txn, "amount": payload["amount"],
            "transactionId": f"T{time.strftime('%y%m%d%H%M%S')}{secrets.randbelow(10**9):09d}",
            "state": "PENDING", "code": "PAYMENT_PENDING", "responseCode": None,
            "paymentInstrument": None, "request": payload, "refunded": 0}
        self.pages[token] = txn
        return {"success": True, "code": "PAYMENT_INITIATED", "message": "Payment initiated",
                "data": {"merchantId": self.merchant_id, "merchantTransactionId": txn,
                         "instrumentResponse": {"type": "PAY_PAGE", "redirectInfo": {
                             "url": f"{self.url}/transact/pg?token={token}",
                             "method": "GET"}}}}

    def status_body(self, txn: str) -> dict:
        record = self.transactions[txn]
        shown = {**record, **record.get("_reported", {})}
        code = shown["code"]
        return {"success": code == "PAYMENT_SUCCESS", "code": code,
                "message": MESSAGES.get(code, code),
                "data": {"merchantId": self.merchant_id, "merchantTransactionId": txn,
                         "transactionId": record["transactionId"], "amount": shown["amount"],
                         "state": record["state"], "responseCode": record["responseCode"],
                         "paymentInstrument": record["paymentInstrument"]}}

    def _status(self, request: Request) -> dict:
        match = STATUS_PATH.match(request.path)
        self._check(request, request.path)
        if match["mid"] != self.merchant_id or request.headers.get(
                "X-MERCHANT-ID") != self.merchant_id:
            raise ApiError(400, "KEY_NOT_CONFIGURED", "Key not found for the merchant")
        if match["txn"] not in self.transactions:
            return {"success": False, "code": "TRANSACTION_NOT_FOUND",
                    "message": MESSAGES["TRANSACTION_NOT_FOUND"], "data": {}}
        return self.status_body(match["txn"])

    def _refund(self, request: Request) -> dict:
        payload = self._decode(request, "/pg/v1/refund", REFUND_FIELDS)
        original = self.transactions.get(payload.get("originalTransactionId", ""))
        if original is None or original["kind"] != "payment":
            raise ApiError(400, "TRANSACTION_NOT_FOUND", "Original transaction not found")
        if original["state"] != "COMPLETED":
            raise ApiError(400, "BAD_REQUEST", "The original transaction is not successful.")
        if payload["amount"] > original["amount"] - original["refunded"]:
            raise ApiError(400, "BAD_REQUEST", "Refund amount exceeds the refundable amount.")
        txn = payload["merchantTransactionId"]
        original["refunded"] += payload["amount"]
        refund = self.transactions[txn] = {
            "kind": "refund", "merchantTransactionId": txn, "amount": payload["amount"],
            "original": original["merchantTransactionId"], "request": payload,
            "transactionId": f"TR{secrets.randbelow(10**15):015d}", "state": "PENDING",
            "code": "PAYMENT_PENDING", "responseCode": "PAYMENT_PENDING",
            "paymentInstrument": None}
        if self.refunds_settle_immediately:
            self._finish(refund, True)
            self._queue_callback(refund)
        return self.status_body(txn)

    @staticmethod
    def _finish(record: dict, ok: bool) -> None:
        record.update(state="COMPLETED" if ok else "FAILED",
                      code="PAYMENT_SUCCESS" if ok else "PAYMENT_ERROR",
                      responseCode="SUCCESS" if ok else "REQUEST_DECLINE_BY_REQUESTEE")

    # ---- hosted pay page -------------------------------------------------------------------

    def _pay_page(self, request: Request) -> Response:
        txn = self.pages.get(request.args.get("token", ""))
        if txn is None:
            return Response("<!doctype html><title>Invalid</title><p>Invalid token.</p>", 404,
                            content_type="text/html")
        with self.lock:
            record = self.transactions[txn]
            if request.method == "POST" and record["state"] == "PENDING":
                return self._submit(request, record)
        rupees = f"₹{record['amount'] // 100}.{record['amount'] % 100:02d}"
        form = ("<form method='post'><label>Pay with <select name='instrument'>"
                "<option value='UPI'>UPI</option><option value='CARD'>Card</option></select>"
                "</label><button name='outcome' value='pay'>Pay</button>"
                "<button name='outcome' value='decline'>Cancel payment</button></form>"
                if record["state"] == "PENDING" else f"<p id='state'>{record['state']}</p>")
        return Response(
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>PhonePe</title>"
            f"</head><body><main><h1>Pay {html.escape(rupees)}</h1><p>Transaction "
            f"<span id='txn'>{html.escape(txn)}</span></p>{form}</main></body></html>",
            content_type="text/html")

    def _submit(self, request: Request, record: dict) -> Response:
        ok = request.form.get("outcome") == "pay"
        self._finish(record, ok)
        if ok and request.form.get("instrument") == "CARD":
            record["paymentInstrument"] = {
                "type": "CARD", "cardType": "CREDIT_CARD", "pgTransactionId": secrets.token_hex(8),
                "bankTransactionId": None, "pgAuthorizationCode": None, "arn": None,
                "bankId": "", "brn": secrets.token_hex(6)}
        elif ok:
            record["paymentInstrument"] = {"type": "UPI", "utr": str(secrets.randbelow(10**12))}
        self._queue_callback(record)
        target = record["request"]["redirectUrl"]
        if record["request"]["redirectMode"] == "REDIRECT":
            return Response(status=302, headers={"Location": target})
        fields = {"code": record["code"], "merchantId": self.merchant_id,
                  "transactionId": record["merchantTransactionId"],
                  "amount": str(record["amount"]), "providerReferenceId": record["transactionId"],
                  "param1": "na", "param2": "na"}  # unsigned, as PhonePe posts them
        inputs = "".join(f"<input type='hidden' name='{k}' value='{html.escape(v)}'>"
                         for k, v in fields.items())
        return Response(f"<!doctype html><form method='post' action='{html.escape(target)}'>"
                        f"{inputs}<button>Continue</button></form>", content_type="text/html")

    # ---- callbacks -------------------------------------------------------------------------

    def _queue_callback(self, record: dict) -> None:
        if self.send_callbacks:
            txn, url = record["merchantTransactionId"], record["request"]["callbackUrl"]
            body, headers = self.callback(txn)
            self.post_later(self.callback_delay, url, body, headers, self.sent_callbacks,
                            partial(SentCallback, url, txn, body, headers))


