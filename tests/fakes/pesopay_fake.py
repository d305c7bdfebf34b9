"""A stateful fake of PesoPay (AsiaPay) speaking its wire format: the hosted `payForm.jsp` the
patient's browser posts to, the signed datafeed, and the merchant API `orderApi.jsp`.

Shapes follow ../shared/reference/gateways.md §7: AsiaPay's own Magento and WooCommerce plugins
(form fields, `secureHash`, datafeed fields, the Query's XML `record`s), Odoo's payment_asiapay
(hash functions, the merchant API's `resultCode=...&errMsg=...` answers) and PayDollar's merchant
help (order statuses). The fake mounts the test host's folder, `/b2cDemo/eng`.
"""

from __future__ import annotations

import hashlib
import html
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer, Fault

PREFIX = "/b2cDemo/eng"
PAY_FORM = PREFIX + "/payment/payForm.jsp"
PAY_COMPLETE = PREFIX + "/payment/payComp.jsp"
ORDER_API = PREFIX + "/merchant/api/orderApi.jsp"

HASHES = {"SHA-1": hashlib.sha1, "SHA-256": hashlib.sha256, "SHA-512": hashlib.sha512}
CURRENCIES = {"608": ("PHP", 2), "344": ("HKD", 2), "840": ("USD", 2), "702": ("SGD", 2),
              "764": ("THB", 2), "392": ("JPY", 0), "410": ("KRW", 0), "356": ("INR", 2)}
TEST_VISA = "4918914107195005"  # AsiaPay's published test card (accepted)
DECLINED_CARD = "4000000000000002"
FORM_FIELDS = ("merchantId", "orderRef", "currCode", "amount", "payType", "successUrl",
               "failUrl", "cancelUrl", "lang", "payMethod", "secureHash")
LANGUAGES = set("ECXJTFGRSK")


def asiapay_hash(function: str, values: list[str], secret: str) -> str:
    return HASHES[function]("|".join([*values, secret]).encode()).hexdigest()


def sign_datafeed(fields: dict[str, str], secret: str, function: str = "SHA-1") -> str:
    """`secureHash` of a datafeed: src|prc|successcode|Ref|PayRef|Cur|Amt|payerAuth|secret."""
    return asiapay_hash(function, [fields.get(k, "") for k in (
        "src", "prc", "successcode", "Ref", "PayRef", "Cur", "Amt", "payerAuth")], secret)


def minor(amount: str, exponent: int) -> int | None:
    whole, _, fraction = amount.partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > exponent:
        return None
    return int(whole) * 10 ** exponent + int(fraction.ljust(exponent, "0") or 0)


def major(amount: int, exponent: int) -> str:
    if not exponent:
        return str(amount)
    return f"{amount // 10 ** exponent}.{amount % 10 ** exponent:0{exponent}d}"


@dataclass
class Transaction:
    """One attempt to pay an order: what the Query API lists as a `record`."""

    order_ref: str
    pay_ref: str
    status: str
    amount: int
    cur: str
    amt: str  # exactly as posted
    pay_method: str
    tx_time: str
    refunded: int = 0
    refunds: list[int] = field(default_factory=list)

    @property
    def exponent(self) -> int:
        return CURRENCIES[self.cur][1]


@dataclass
class SentDatafeed:
    url: str
    fields: dict[str, str]
    body: bytes
    status: int | None  # None when the connection failed
    answer: str


class FakePesoPay(FakeServer):
    def __init__(self, merchant_id: str = "18000000", secure_hash_secret: str = "secret",
                 hash_function: str = "SHA-1", api_users: dict[str, str] | None = None,
                 currencies: tuple[str, ...] = ("608",)) -> None:
        super().__init__()
        self.merchant_id = merchant_id
        # The secrets AsiaPay signs datafeeds with: several while one is being rotated.
        self.secure_hash_secrets = [secure_hash_secret]
        self.hash_function = hash_function
        self.api_users = dict(api_users or {"apiuser": "apipass"})
        self.currencies = currencies  # one currency per merchant account, as AsiaPay has it
        self.datafeed_url: str | None = None  # set in the merchant admin, not per payment
        self.datafeed_delay = 0.1
        self.datafeeds: list[SentDatafeed] = []
        self.forms: list[dict[str, str]] = []  # every form posted to payForm.jsp
        self.transactions: dict[str, Transaction] = {}  # PayRef -> attempt
        self._sessions: dict[str, dict[str, str]] = {}
        self._next_pay_ref = 5_000_000

    # ---- test controls ---------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return self.url + PREFIX

    def fail_next(self, status: int, body: str = "", *, path: str | None = ORDER_API,
                  content_type: str = "text/plain", after: bool = False) -> None:
        """Answer the next request to `path` with `status` and `body`; `after=True` does the
        work first and loses the answer."""
        self.add_fault(Fault(path, status, body, content_type, after=after))

    def delay_next(self, seconds: float, *, path: str | None = ORDER_API,
                   after: bool = False) -> None:
        """Sleep before answering the next request to `path` (after doing its work if `after`)."""
        self.add_fault(Fault(path, delay=seconds, after=after))

    def wait_datafeeds(self, count: int, timeout: float = 5.0) -> list[SentDatafeed]:
        return self.wait_sent(self.datafeeds, count, timeout, "datafeeds")

    def send_datafeed(self, fields: dict[str, str], *, sign: bool = True) -> dict[str, str]:
        """Queue a datafeed to `datafeed_url`, signed with every current secret, comma-joined."""
        fields = dict(fields)
        if sign:
            fields["secureHash"] = ",".join(sign_datafeed(fields, s, self.hash_function)
                                            for s in self.secure_hash_secrets)
        self.later(self.datafeed_delay, lambda: self._post_datafeed(fields))
        return fields

    def datafeed_fields(self, txn: Transaction, *, successcode: str | None = None,
                        amt: str | None = None, cur: str | None = None) -> dict[str, str]:
        """The datafeed AsiaPay posts for an attempt (fields as its Magento plugin reads them)."""
        accepted = txn.status == "Accepted"
        return {
            "src": "0" if accepted else "1", "prc": "0" if accepted else "1",
            "Ord": f"{secrets.randbelow(10 ** 12):012d}", "Holder": "Asha Rao",
            "successcode": successcode if successcode is not None else "0" if accepted else "1",
            "Ref": txn.order_ref, "PayRef": txn.pay_ref, "Amt": amt or txn.amt,
            "Cur": cur or txn.cur, "remark": "", "AuthId": "123456" if accepted else "",
            "eci": "05", "payerAuth": "Y", "sourceIp": "127.0.0.1", "ipCountry": "PH",
            "payMethod": txn.pay_method, "TxTime": txn.tx_time, "panFirst4": "4918",
            "panLast4": "5005", "cardIssuingCountry": "PH", "channelType": "SPC",
            "AlertCode": "", "MerchantId": self.merchant_id, "expMonth": "07",
            "expYear": "2030"}

    def settle_refunds(self) -> None:
        """AsiaPay has processed the refunds requested so far."""
        with self.lock:
            for txn in self.transactions.values():
                if txn.status in ("Request Refund", "RequestPartialRefund"):
                    txn.status = "Refunded" if txn.refunded >= txn.amount else "Partial Refunded"

    # ---- dispatch --------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        return self.with_faults(request.path, lambda: self._locked_route(request))

    def _locked_route(self, request: Request) -> Response:
        with self.lock:
            return self._route(request)

    def _route(self, request: Request) -> Response:
        if request.method == "POST" and request.path == PAY_FORM:
            return self._pay_form(request.form.to_dict())
        if request.method == "POST" and request.path == PAY_COMPLETE:
            return self._pay_complete(request.form.to_dict())
        if request.method == "POST" and request.path == ORDER_API:
            return self._order_api(request.form.to_dict())
        return Response("Not Found", status=404)

    # ---- the hosted form -------------------------------------------------------------------

    def _pay_form(self, form: dict[str, str]) -> Response:
        self.forms.append(form)
        problem = self._form_problem(form)
        if problem:
            return self._page("Payment error", f"<p role='alert' id='error'>{problem}</p>", 400)
        session_id = secrets.token_hex(8)
        self._sessions[session_id] = form
        currency, _ = CURRENCIES[form["currCode"]]
        body = (f"<p>Merchant <span id='merchant'>{html.escape(form['merchantId'])}</span></p>"
                f"<p>Amount: <strong id='amount'>{currency} {html.escape(form['amount'])}"
                f"</strong></p><p>Order reference: <span id='reference'>"
                f"{html.escape(form['orderRef'])}</span></p>"
                f"<form method='post' action='{PAY_COMPLETE}'>"
                f"<input type='hidden' name='session' value='{session_id}'>"
                "<label>Card number <input name='cardNo' autocomplete='off'></label>"
                "<button name='action' value='pay'>Pay</button>"
                "<button name='action' value='cancel'>Cancel</button></form>")
        return self._page(f"Pay {currency} {form['amount']}", body)

    def _form_problem(self, form: dict[str, str]) -> str:
        missing = [f for f in FORM_FIELDS if f != "secureHash" and not form.get(f)]
        if missing:
            return f"Parameter {missing[0]} is missing."
        if form["merchantId"] != self.merchant_id:
            return "Invalid merchantId."
        if form["currCode"] not in self.currencies:
            return "The currency is not supported by this merchant account."
        if len(form["orderRef"]) > 35:
            return "orderRef is too long."
        if form["payType"] not in ("N", "H") or form["lang"] not in LANGUAGES:
            return "Invalid payType or lang."
        amount = minor(form["amount"], CURRENCIES[form["currCode"]][1])
        if not amount:
            return "Invalid amount."
        expected = asiapay_hash(self.hash_function, [form[k] for k in (
            "merchantId", "orderRef", "currCode", "amount", "payType")],
            self.secure_hash_secrets[-1])
        if form.get("secureHash", "").lower() != expected:
            return "Secure hash verification failed."
        if any(t.order_ref == form["orderRef"] and t.status == "Accepted"
               for t in self.transactions.values()):
            return "This order has already been paid."
        return ""

    def _pay_complete(self, data: dict[str, str]) -> Response:
        form = self._sessions.get(data.get("session", ""))
        if form is None:
            return self._page("Payment error", "<p role='alert'>Session expired.</p>", 400)
        if data.get("action") == "cancel":
            return self._redirect(form["cancelUrl"])
        card = "".join(data.get("cardNo", "").split())
        if card not in (TEST_VISA, DECLINED_CARD):
            return self._page("Payment error", "<p role='alert'>Use a test card.</p>", 400)
        self._next_pay_ref += 1
        currency, exponent = CURRENCIES[form["currCode"]]
        txn = Transaction(
            order_ref=form["orderRef"], pay_ref=str(self._next_pay_ref),
            status="Accepted" if card == TEST_VISA else "Rejected",
            amount=minor(form["amount"], exponent), cur=form["currCode"], amt=form["amount"],
            pay_method="VISA", tx_time=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.0"))
        self.transactions[txn.pay_ref] = txn
        self.send_datafeed(self.datafeed_fields(txn))
        del self._sessions[data["session"]]
        return self._redirect(form["successUrl"] if txn.status == "Accepted"
                              else form["failUrl"], txn.order_ref)

    @staticmethod
    def _redirect(url: str, reference: str | None = None) -> Response:
        if reference is not None:  # the browser comes back with Ref, unsigned
            url += ("&" if "?" in url else "?") + urlencode({"Ref": reference})
        return Response(status=302, headers={"Location": url})

    @staticmethod
    def _page(title: str, body: str, status: int = 200) -> Response:
        return Response(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
                        f"{html.escape(title)}</title></head><body><main><h1>PesoPay</h1>"
                        f"{body}</main></body></html>", status=status, content_type="text/html")

    # ---- the merchant API ------------------------------------------------------------------

    def _order_api(self, data: dict[str, str]) -> Response:
        if (data.get("merchantId") != self.merchant_id
                or self.api_users.get(data.get("loginId", "")) != data.get("password")):
            return self._answer({"resultCode": "-1", "errMsg": "Authentication Failed"})
        action = data.get("actionType")
        if action == "Query":
            return self._query(data)
        if action == "RequestRefund":
            return self._request_refund(data)
        return self._answer({"resultCode": "-1", "errMsg": "Invalid actionType"})

    @staticmethod
    def _answer(fields: dict[str, str]) -> Response:
        return Response(urlencode(fields), content_type="text/plain")

    def _query(self, data: dict[str, str]) -> Response:
        if not data.get("orderRef") and not data.get("payRef"):
            return self._answer({"resultCode": "-1", "errMsg": "orderRef or payRef required"})
        found = [t for t in self.transactions.values()
                 if t.order_ref == data.get("orderRef") or t.pay_ref == data.get("payRef")]
        records = "".join(
            "<record>" + "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in (
                ("orderStatus", t.status), ("ref", t.order_ref), ("payRef", t.pay_ref),
                ("source", "WEB"), ("amt", t.amt), ("cur", t.cur),
                ("prc", "0" if t.status != "Rejected" else "1"),
                ("src", "0" if t.status != "Rejected" else "1"), ("payMethod", t.pay_method),
                ("txTime", t.tx_time))) + "</record>" for t in found)
        return Response(f'<?xml version="1.0" encoding="UTF-8"?><records>{records}</records>',
                        content_type="text/xml")

    def _request_refund(self, data: dict[str, str]) -> Response:
        txn = self.transactions.get(data.get("payRef", ""))
        if txn is None:
            return self._answer({"resultCode": "-1", "errMsg": "Transaction not found"})
        if txn.status not in ("Accepted", "Accepted_Adj", "Request Refund",
                              "RequestPartialRefund", "Partial Refunded"):
            return self._answer({"resultCode": "-1",
                                 "errMsg": f"Transaction status {txn.status} cannot be refunded"})
        amount = minor(data.get("amount", ""), txn.exponent)
        if not amount or amount > txn.amount - txn.refunded:
            return self._answer({"resultCode": "-1", "errMsg": "Invalid refund amount"})
        txn.refunded += amount
        txn.refunds.append(amount)
        txn.status = ("Request Refund" if txn.refunded >= txn.amount
                      else "RequestPartialRefund")
        return self._answer({"resultCode": "0", "orderStatus": txn.status, "ref": txn.order_ref,
                             "payRef": txn.pay_ref, "amt": major(amount, txn.exponent),
                             "cur": txn.cur, "errMsg": ""})

    # ---- datafeed delivery -----------------------------------------------------------------

    def _post_datafeed(self, fields: dict[str, str]) -> None:
        """To the datafeed URL set when it falls due (none set: recorded as not sent)."""
        url, body = self.datafeed_url, urlencode(fields).encode()
        status, answer = self.post(url, body, {
            "Content-Type": "application/x-www-form-urlencoded"}) if url else (None, "")
        self.record(self.datafeeds, SentDatafeed(url or "", fields, body, status, answer))
