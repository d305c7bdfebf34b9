"""A stateful fake of PayTabs' PT2 API and Hosted Payment Page, speaking its wire format.

Shapes follow paytabscom/php-sdk (tests/fixtures/responses, Payloads/Failure.php) and
../shared/reference/gateways.md §5: JSON POSTs authorised by the bare server key, amounts as
decimal numbers in major units (echoed as strings), the payer's browser POSTed back to `return`
with a signed form, and IPNs signed `Signature: hex(HMAC-SHA256(server key, raw body))`.
Signatures are computed here independently of the gateway module, the way PayTabs does.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, NamedTuple

import requests
from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

EXPONENTS = {"AED": 2, "BHD": 3, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "IDR": 2, "INR": 2,
             "IQD": 3, "JOD": 3, "JPY": 0, "KWD": 3, "MAD": 2, "OMR": 3, "PKR": 2, "QAR": 2,
             "SAR": 2, "USD": 2}
MAX_AMOUNT = Decimal("9999999999.99")
DECLINED_CARD = "4000000000000002"
MESSAGES = {"A": "Authorised", "H": "Authorised", "P": "Pending", "D": "Declined",
            "E": "Error", "C": "Cancelled", "X": "Expired", "V": "Voided"}
AUTH_FAILED = (401, 1, "Authentication failed. Check authentication header.")


def php_urlencode(text: str) -> str:
    """PHP urlencode(): letters, digits and -_. stay; space is +; everything else %XX."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else
                   "+" if c == " " else "".join(f"%{b:02X}" for b in c.encode())
                   for c in text)


def sign_return(server_key: str, fields: dict[str, str]) -> str:
    """PayTabs' browser-return signature: ksort, drop empty, http_build_query, HMAC-SHA256."""
    kept = sorted((k, v) for k, v in fields.items() if k != "signature" and v not in ("", None))
    query = "&".join(f"{php_urlencode(k)}={php_urlencode(v)}" for k, v in kept)
    return hmac.new(server_key.encode(), query.encode(), hashlib.sha256).hexdigest()


def sign_ipn(server_key: str, body: bytes) -> str:
    return hmac.new(server_key.encode(), body, hashlib.sha256).hexdigest()


def parse_return_form(page: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the auto-posting form PayTabs' page ends with."""
    action = html.unescape(re.search(r'<form[^>]* action="([^"]*)"', page).group(1))
    fields = {html.unescape(name): html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', page)}
    return action, fields


class SentIpn(NamedTuple):
    url: str
    body: bytes
    status: int | None  # None when the connection failed
    headers: dict

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _major(minor: int, currency: str) -> str:
    places = EXPONENTS[currency]
    return f"{Decimal(minor).scaleb(-places):.{places}f}"


class FakePayTabs(FakeServer):
    def __init__(self, profiles: dict[int, str] | None = None, merchant_id: int = 1842) -> None:
        super().__init__()
        self.profiles = dict(profiles or {47170: "SJNXXXXXXX-XXXXXXXXXX-XXXXXXXXXX"})
        self.merchant_id = merchant_id
        self.transactions: dict[str, dict] = {}  # tran_ref -> transaction; "_" keys are ours
        self.pages: dict[str, str] = {}  # hosted page id -> tran_ref
        self.tokens: dict[str, dict] = {}  # token -> {"tran_ref", "profile_id", "payment_info"}
        self.ipn_urls: list[str] = []  # Dashboard → Developers → Payment Notification
        self.deliver_callbacks = True
        self.next_status: str | None = None  # forces the next hosted-page outcome letter
        self.refund_status = "A"
        self.declined_tokens: set[str] = set()
        self.ipn_delay = 0.1
        self.sent: list[SentIpn] = []
        self._refs = itertools.count(2623802990085)

    # ---- test controls ---------------------------------------------------------------------

    def fail_next(self, status: int, message: str | None = None, *, code: int | None = None,
                  raw: bytes | None = None, path: str | None = None, after: bool = False) -> None:
        """Answer the next API call (whose path starts with `path`) with PayTabs' error body.

        `raw`: a non-JSON body (a proxy's HTML page); `after=True` does the work first and
        loses the answer.
        """
        if raw is not None:
            self.add_fault(Fault(path, status, raw, "text/html", after))
            return
        body = {"code": code if code is not None else (1 if status == 401 else 500),
                "message": message or "Internal error", "trace": self._trace()}
        self.add_fault(Fault(path, status, json.dumps(body).encode(), after=after))

    def delay_next(self, seconds: float, *, path: str | None = None) -> None:
        self.add_fault(Fault(path, delay=seconds))

    def wait_ipns(self, count: int, timeout: float = 5.0) -> list[SentIpn]:
        return self.wait_sent(self.sent, count, timeout, "IPNs")

    def ipn_body(self, tran_ref: str, **changes: Any) -> bytes:
        """The exact IPN body PayTabs would send for a transaction, with `changes` applied."""
        with self.lock:
            return json.dumps({**self._ipn(self.transactions[tran_ref]), **changes},
                              separators=(",", ":")).encode()

    def post_ipn(self, url: str, body: bytes, server_key: str | None = None) -> requests.Response:
        """POST an IPN now, signed with `server_key` (default: the transaction's profile's)."""
        key = server_key or self.profiles[json.loads(body)["profile_id"]]
        return requests.post(url, data=body, timeout=10, headers={
            "Content-Type": "application/json", "Signature": sign_ipn(key, body)})

    def resolve(self, tran_ref: str, letter: str = "A") -> dict:
        """A held or pending transaction reaches `letter`; its callback and the Dashboard's
        IPN URLs hear of it."""
        with self.lock:
            transaction = self.transactions[tran_ref]
            transaction["payment_result"].update(response_status=letter,
                                                 response_message=MESSAGES[letter])
            self._notify(transaction, callback=True)
            return self._public(transaction)

    # ---- the API ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/payment/wr/"):
            return self._hosted_page(request, path.removeprefix("/payment/wr/"))
        routes = {"/payment/request": self._payment_request, "/payment/query": self._query,
                  "/payment/token/delete": self._delete_token}
        if request.method != "POST" or path not in routes:
            return self._json({"code": 404, "message": "Not found", "trace": self._trace()}, 404)
        return self.with_faults(path, lambda: self._api(request, routes[path]))

    def _api(self, request: Request, route) -> Response:
        try:
            with self.lock:
                return self._json(route(self._authorised(request)))
        except ApiError as exc:
            return self._json({"code": exc.code, "message": exc.message,
                               "trace": self._trace()}, exc.status)

    def _authorised(self, request: Request) -> dict:
        try:
            body = json.loads(request.get_data(), parse_float=Decimal)
        except ValueError:
            raise ApiError(400, 5, "Invalid request payload") from None
        if not isinstance(body, dict):
            raise ApiError(400, 5, "Invalid request payload")
        profile_id = body.get("profile_id")
        key = self.profiles.get(profile_id) if type(profile_id) is int else None
        if key is None or not hmac.compare_digest(request.headers.get("authorization", ""), key):
            raise ApiError(*AUTH_FAILED)
        return body

    def _amount(self, body: dict) -> tuple[str, int]:
        currency = body.get("cart_currency")
        if currency not in EXPONENTS:
            raise ApiError(400, 206, "Invalid currency code")
        amount = body.get("cart_amount")
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            raise ApiError(400, 207, "Invalid cart amount")
        minor = Decimal(amount).scaleb(EXPONENTS[currency])
        if minor != minor.to_integral_value() or not 0 < amount <= MAX_AMOUNT:
            raise ApiError(400, 207, "Invalid cart amount")
        return currency, int(minor)

    def _payment_request(self, body: dict) -> dict:
        for field in ("tran_type", "tran_class", "cart_id", "cart_description"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise ApiError(400, 5, f"{field} is required")
        currency, minor = self._amount(body)
        kind, klass = body["tran_type"].lower(), body["tran_class"].lower()
        if kind == "sale" and klass == "ecom":
            return self._hosted_sale(body, currency, minor)
        if kind == "sale" and klass == "recurring":
            return self._recurring_sale(body, currency, minor)
        if kind == "refund" and klass == "ecom":
            return self._refund(body, currency, minor)
        raise ApiError(400, 112, "Method/Class/Currency combination not supported")

    def _new(self, body: dict, currency: str, minor: int, **fields: Any) -> dict:
        tran_ref = f"TST{next(self._refs)}"
        transaction = {
            "tran_ref": tran_ref, "tran_type": "Sale", "tran_class": "ECom",
            "cart_id": body["cart_id"], "cart_description": body["cart_description"],
            "cart_currency": currency, "cart_amount": _major(minor, currency),
            "tran_currency": currency, "tran_total": "0",
            "customer_details": dict(body.get("customer_details") or {}),
            "profileId": body["profile_id"], "_minor": minor, **fields}
        self.transactions[tran_ref] = transaction
        return transaction

    def _hosted_sale(self, body: dict, currency: str, minor: int) -> dict:
        for field in ("return", "callback"):
            if field in body and not isinstance(body[field], str):
                raise ApiError(400, 5, f"{field} must be a URL")
        page_id = secrets.token_hex(28).upper()
        sale = self._new(body, currency, minor, _page=page_id,
                         _return=body.get("return", "none"), _callback=body.get("callback"),
                         _tokenise=body.get("tokenise"),
                         _show_save_card=bool(body.get("show_save_card")))
        self.pages[page_id] = sale["tran_ref"]
        return {**self._public(sale), "return": sale["_return"],
                "callback": sale["_callback"] or "none",
                "redirect_url": f"{self.url}/payment/wr/{page_id}", "serviceId": 2,
                "merchantId": self.merchant_id}

    def _recurring_sale(self, body: dict, currency: str, minor: int) -> dict:
        token = self.tokens.get(body.get("token"))
        if token is None or token["profile_id"] != body["profile_id"] \
                or token["tran_ref"] != body.get("tran_ref"):
            raise ApiError(400, 116, "Invalid token or transaction reference")
        letter = "D" if body["token"] in self.declined_tokens else "A"
        sale = self._new(body, currency, minor, tran_class="Recurring",
                         previous_tran_ref=token["tran_ref"], token=body["token"],
                         payment_info=dict(token["payment_info"]))
        self._complete(sale, letter)
        self._notify(sale, callback=False)
        return self._public(sale)

    def _refund(self, body: dict, currency: str, minor: int) -> dict:
        sale = self.transactions.get(body.get("tran_ref"))
        if sale is None or sale["profileId"] != body["profile_id"] \
                or sale["tran_type"] != "Sale" \
                or sale.get("payment_result", {}).get("response_status") != "A":
            raise ApiError(400, 113, "Invalid transaction reference")
        if currency != sale["cart_currency"]:
            raise ApiError(400, 206, "Invalid currency code")
        refunds = [t for t in self.transactions.values()
                   if t.get("previous_tran_ref") == sale["tran_ref"] and t["tran_type"] == "Refund"]
        if any(t["cart_id"] == body["cart_id"] for t in refunds):
            raise ApiError(409, 4, "Duplicate Request")
        refunded = sum(t["_minor"] for t in refunds
                       if t["payment_result"]["response_status"] in ("A", "P", "H"))
        if refunded + minor > sale["_minor"]:
            raise ApiError(400, 208, "Refund amount exceeds the transaction amount")
        refund = self._new(body, currency, minor, tran_type="Refund",
                           previous_tran_ref=sale["tran_ref"],
                           payment_info=dict(sale.get("payment_info") or {}))
        self._complete(refund, self.refund_status)
        self._notify(refund, callback=False)
        return self._public(refund)

    def _query(self, body: dict) -> Any:
        if body.get("tran_ref"):
            transaction = self.transactions.get(body["tran_ref"])
            if transaction is None or transaction["profileId"] != body["profile_id"]:
                raise ApiError(400, 113, "Invalid transaction reference")
            return {**self._public(transaction), "serviceId": 2,
                    "paymentChannel": "Payment Page", "merchantId": self.merchant_id,
                    "trace": self._trace()}
        if body.get("cart_id"):
            found = [t for t in self.transactions.values()
                     if t["cart_id"] == body["cart_id"] and t["profileId"] == body["profile_id"]]
            return [{**self._public(t), "serviceId": 0} for t in reversed(found)]
        raise ApiError(400, 5, "tran_ref or cart_id is required")

    def _delete_token(self, body: dict) -> dict:
        token = self.tokens.get(body.get("token"))
        if token is None or token["profile_id"] != body["profile_id"]:
            raise ApiError(400, 116, "Invalid token")
        del self.tokens[body["token"]]
        return {"code": 0, "message": "success", "trace": self._trace()}

    # ---- hosted payment page ---------------------------------------------------------------

    def _hosted_page(self, request: Request, page_id: str) -> Response:
        with self.lock:
            sale = self.transactions.get(self.pages.get(page_id, ""))
            if sale is None:
                return self._html("<h1>Payment page not found</h1>", 404)
            if "payment_result" in sale:
                return self._html("<h1>This payment page has expired</h1>", 410)
            if request.method == "POST":
                return self._submit(request, sale)
            money = f"{sale['cart_currency']} {sale['cart_amount']}"
            save = ("<p><label><input type='checkbox' name='save_card' value='1'> Save card"
                    "</label></p>" if sale["_show_save_card"] else "")
            return self._html(
                f"<h1>{html.escape(sale['cart_description'])}</h1>"
                f"<p>Amount: <strong id='amount'>{html.escape(money)}</strong></p>"
                f"<p>Cart: <span id='cart'>{html.escape(sale['cart_id'])}</span></p>"
                "<form method='post'><p><label for='card'>Card number</label> "
                "<input id='card' name='card_number' autocomplete='off'></p>"
                f"{save}<button name='outcome' value='pay'>Pay now</button> "
                "<button name='outcome' value='cancel'>Cancel</button></form>")

    def _submit(self, request: Request, sale: dict) -> Response:
        card = re.sub(r"\D", "", request.form.get("card_number", "")) or "4111111111111111"
        if request.form.get("outcome") == "cancel":
            letter = "C"
        elif card == DECLINED_CARD:
            letter = "D"
        else:
            letter, self.next_status = self.next_status or "A", None
        if letter != "C":
            sale["payment_info"] = {
                "payment_method": "Visa", "card_type": "Credit", "card_scheme": "Visa",
                "payment_description": f"{card[:4]} {card[4:6]}## #### {card[-4:]}",
                "expiryMonth": 12, "expiryYear": 2030}
        else:
            sale["payment_info"] = {"card_scheme": "", "payment_description": "No Payment"}
        self._complete(sale, letter)
        wants_token = sale["_tokenise"] and (not sale["_show_save_card"]
                                             or request.form.get("save_card"))
        if letter == "A" and wants_token:
            token = secrets.token_hex(16).upper()
            self.tokens[token] = {"tran_ref": sale["tran_ref"], "profile_id": sale["profileId"],
                                  "payment_info": dict(sale["payment_info"])}
            sale["token"] = token
        self._notify(sale, callback=True)
        if sale["_return"] in ("", "none", None):
            return self._html(f"<h1>{MESSAGES[letter]}</h1>")
        fields = {"acquirerMessage": "", "acquirerRRN": "", "cartId": sale["cart_id"],
                  "customerEmail": sale["customer_details"].get("email", ""),
                  "respCode": sale["payment_result"]["response_code"],
                  "respMessage": sale["payment_result"]["response_message"],
                  "respStatus": letter, "token": sale.get("token", ""),
                  "tranRef": sale["tran_ref"]}
        fields["signature"] = sign_return(self.profiles[sale["profileId"]], fields)
        inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                         f'value="{html.escape(v)}">' for k, v in fields.items())
        return self._html(
            f'<p>Redirecting to the merchant…</p><form method="post" '
            f'action="{html.escape(sale["_return"])}">{inputs}'
            '<noscript><button>Continue</button></noscript></form>'
            "<script>document.forms[0].submit()</script>")

    # ---- transactions and notifications ----------------------------------------------------

    def _complete(self, transaction: dict, letter: str) -> None:
        code = f"G{secrets.randbelow(10 ** 5):05d}" if letter in ("A", "H") else "354"
        transaction["payment_result"] = {
            "response_status": letter, "response_code": code,
            "response_message": MESSAGES.get(letter, "Unknown"),
            "acquirer_ref": f"TRAN0201.{secrets.token_hex(4).upper()}.00007A85",
            "cvv_result": " ", "avs_result": " ",
            "transaction_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        transaction["tran_total"] = transaction["cart_amount"] if letter != "C" else "0"

    @staticmethod
    def _public(transaction: dict) -> dict:
        return {k: v for k, v in transaction.items() if not k.startswith("_")}

    def _ipn(self, transaction: dict) -> dict:
        public = self._public(transaction)
        ipn = {"tran_ref": public.pop("tran_ref"), "merchant_id": self.merchant_id,
               "profile_id": public.pop("profileId")}
        ipn.update(public)
        ipn.update(ipn_trace=f"IPNS0201.{secrets.token_hex(4).upper()}.00000BED",
                   paymentChannel="Payment Page")
        return ipn

    def _notify(self, transaction: dict, *, callback: bool) -> None:
        """Queue the IPN: to the request's callback, and to every Dashboard IPN URL."""
        urls = list(self.ipn_urls)
        if callback and self.deliver_callbacks and transaction.get("_callback"):
            urls.insert(0, transaction["_callback"])
        if not urls:
            return
        body = json.dumps(self._ipn(transaction), separators=(",", ":")).encode()
        key = self.profiles[transaction["profileId"]]
        headers = {"Content-Type": "application/json", "Signature": sign_ipn(key, body)}
        for url in urls:
            self.post_later(self.ipn_delay, url, body, headers, self.sent,
                            partial(SentIpn, url, body, headers=headers))

    @staticmethod
    def _trace() -> str:
        return f"PMNT0101.{secrets.token_hex(4).upper()}.{secrets.randbelow(10 ** 8):08X}"

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    @staticmethod
    def _html(content: str, status: int = 200) -> Response:
        return Response("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                        "<title>PayTabs</title></head><body><main>" + content +
                        "</main></body></html>", status=status, content_type="text/html")
