"""A fake of Stripe's Checkout Sessions API, its hosted page and its signed webhooks.

`FakeStripe` speaks Stripe's wire format: form bodies in bracket notation, JSON answers,
`Authorization: Bearer <key>` (or Basic with the key as user), Stripe-style error objects and
`Idempotency-Key` replays (`Idempotent-Replayed: true`). Checkout Sessions live here; every other
`/v1/` call is forwarded verbatim to a localstripe given as `upstream` (see `localstripe.py`),
and the hosted page's Pay button makes the real Customer/PaymentMethod/PaymentIntent there.
Without an upstream the fake keeps minimal PaymentIntents, PaymentMethods and Refunds itself.

Usage::

    with start_localstripe() as upstream, FakeStripe(upstream=upstream) as fake:
        fake.add_webhook("http://127.0.0.1:5000/payments/webhook/stripe", "whsec_x")
        client = stripe.StripeClient(DEFAULT_KEY, base_addresses={"api": fake.url})

Test controls: `fail_next(status, error)`, `delay_next(seconds)`, `async_payment = True`,
`send_event(type, obj)`, `wait_for_events(n)`, `sent_events`, `sessions`, `requests`.
Test cards on the hosted page: 4242424242424242 pays; 4000000000000002 and 4000000000009995
are declined by the fake; 4000000000000341 is declined by localstripe (a failed PI is left
there) or by the fake when there is no upstream.

Error messages follow Stripe's where known (missing/unknown params, invalid integers, API key,
`expires_at` range, resource_missing); the currency and amount-rounding ones are approximations.
Injected faults (`fail_next`) are not recorded for idempotency, as if the call never reached the
endpoint, so a retry with the same key goes through.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import requests
from werkzeug.wrappers import Request, Response

from tests.fakes.server import FakeServer

API_VERSION = "2024-06-20"
DEFAULT_KEY = "sk_test_fake_4eC39HqLyjWDarjtT1zdp7dc"
PAGE_PREFIX = "/c/pay/"
DECLINED_CARDS = {"4000000000000002", "4000000000000341", "4000000000009995"}
CHARGE_FAILS = "4000000000000341"  # localstripe declines this one at charge time
ZERO_DECIMAL = set("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
ROUNDING = {"bhd": 10, "jod": 10, "kwd": 10, "omr": 10, "tnd": 10, "isk": 100}
SESSION_PARAMS = set("""adaptive_pricing after_expiration allow_promotion_codes automatic_tax
    billing_address_collection branding_settings cancel_url client_reference_id consent_collection
    currency custom_fields custom_text customer customer_creation customer_email customer_update
    discounts excluded_payment_method_types expand expires_at invoice_creation line_items locale
    metadata mode optional_items payment_intent_data payment_method_collection
    payment_method_configuration payment_method_data payment_method_options payment_method_types
    phone_number_collection redirect_on_completion return_url saved_payment_method_options
    setup_intent_data shipping_address_collection shipping_options submit_type subscription_data
    success_url tax_id_collection ui_mode wallet_options""".split())
LINE_ITEM_PARAMS = {"adjustable_quantity", "dynamic_tax_rates", "metadata", "price", "price_data",
                    "quantity", "tax_rates"}
PRICE_DATA_PARAMS = {"currency", "product", "product_data", "recurring", "tax_behavior",
                     "unit_amount", "unit_amount_decimal"}
PRODUCT_DATA_PARAMS = {"description", "images", "metadata", "name", "tax_code", "unit_label"}
PI_DATA_PARAMS = {"application_fee_amount", "capture_method", "description", "metadata",
                  "on_behalf_of", "receipt_email", "setup_future_usage", "shipping",
                  "statement_descriptor", "statement_descriptor_suffix", "transfer_data",
                  "transfer_group"}
REFUND_PARAMS = {"amount", "charge", "expand", "instructions_email", "metadata", "origin",
                 "payment_intent", "reason", "refund_application_fee", "reverse_transfer"}
DEFAULT_ERRORS = {
    400: {"type": "invalid_request_error", "message": "Bad request (injected)."},
    402: {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
          "message": "Your card was declined."},
    409: {"type": "idempotency_error", "message": "Conflict (injected)."},
    429: {"type": "invalid_request_error", "code": "rate_limit",
          "message": "Request rate limit exceeded."},
}


# --- wire helpers ---------------------------------------------------------------------------

def sign_stripe(secret: str, body: bytes, timestamp: int) -> str:
    """The `Stripe-Signature` header value for `body` sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def parse_form(pairs) -> dict:
    """Stripe bracket notation (`a[b][0][c]=1`, `expand[]=x`) into nested dicts and lists."""
    root: dict = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head, *re.findall(r"\[([^\]]*)\]", "[" + rest)] if rest else [head]
        append = parts[-1] == "" and len(parts) > 1
        if append:
            parts.pop()
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StripeError(400, f"Invalid hash: {key}", param=key)
        if append:
            node.setdefault(parts[-1], {})[str(len(node[parts[-1]]))] = value
        else:
            node[parts[-1]] = value
    return _listify(root)


def _listify(node):
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_listify(node[k]) for k in sorted(node, key=int)]
    return {k: _listify(v) for k, v in node.items()}


def encode_form(params: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts/lists into Stripe's bracket notation (the inverse of `parse_form`)."""
    pairs: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict | list | tuple):
            pairs += encode_form(value, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


def mask_key(key: str) -> str:
    """Mask an API key like Stripe's error messages do: `sk_test_****************abcd`."""
    prefix = re.match(r"(?:[a-z]{2}_(?:test|live)_)?", key).group(0)
    rest = key[len(prefix):]
    return prefix + "*" * max(len(rest) - 4, 0) + rest[-4:]


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits)
                            for _ in range(length))


def format_amount(amount: int, currency: str) -> str:
    if currency in ZERO_DECIMAL:
        return f"{amount} {currency.upper()}"
    digits = 3 if ROUNDING.get(currency) == 10 else 2
    return f"{amount / 10 ** digits:.{digits}f} {currency.upper()}"


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"type": type, "message": message, "code": code, "param": param, **extra}
        self.error = {k: v for k, v in self.error.items() if v is not None}


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing",
                       param=param)


def declined() -> StripeError:
    return StripeError(402, "Your card was declined.", type="card_error", code="card_declined",
                       decline_code="generic_decline")


def _pop(queue: deque, default):
    try:
        return queue.popleft()
    except IndexError:
        return default


def require(params: dict, key: str, param: str) -> Any:
    if params.get(key) in (None, "", {}):
        raise missing(param)
    return params[key]


def not_found(kind: str, obj_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{obj_id}'", code="resource_missing", param=param)


def check_known(params: dict, allowed: set[str], path: str = "") -> None:
    for key in params:
        if key not in allowed:
            name = f"{path}[{key}]" if path else key
            raise StripeError(400, f"Received unknown parameter: {name}",
                              code="parameter_unknown", param=name)


def to_int(value: Any, param: str, minimum: int | None = None) -> int:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        number = int(value)
    else:
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer",
                          param=param)
    if minimum is not None and number < minimum:
        raise StripeError(400, f"This value must be greater than or equal to {minimum}.",
                          code="parameter_invalid_integer", param=param)
    return number


def check_metadata(metadata: Any, param: str) -> dict:
    if metadata in (None, ""):
        return {}
    if not isinstance(metadata, dict) or any(isinstance(v, dict | list)
                                             for v in metadata.values()):
        raise StripeError(400, "Invalid hash", param=param)
    if len(metadata) > 50:
        raise StripeError(400, "You can have up to 50 metadata keys.", param=param)
    for key, value in metadata.items():
        if len(key) > 40 or len(value) > 500:
            raise StripeError(400, "Metadata keys can have up to 40 characters and values up "
                              f"to 500 characters (key {key!r}).", param=f"{param}[{key}]")
    return dict(metadata)


def check_url(params: dict, name: str, required: bool = False) -> str | None:
    url = params.get(name)
    if url is None:
        if required:
            raise missing(name)
        return None
    if not re.match(r"https?://[^/\s]+", url):
        raise StripeError(400, "Not a valid URL", code="url_invalid", param=name)
    return url


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(json.dumps(body, indent=2), status=status, mimetype="application/json")
    response.headers["Request-Id"] = new_id("req_", 14)
    response.headers["Stripe-Version"] = API_VERSION
    response.headers.update(headers or {})
    return response


def error_response(error: StripeError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="Stripe"'} if error.status == 401 else {}
    return json_response({"error": error.error}, error.status, headers)


# --- the fake -------------------------------------------------------------------------------

@dataclass
class Checkout:
    obj: dict
    api_key: str
    pi_data: dict = field(default_factory=dict)
    paying: threading.Lock = field(default_factory=threading.Lock)  # one Pay at a time


@dataclass
class Saved:
    endpoint: str
    params: dict
    status: int
    body: bytes
    content_type: str


class FakeStripe(FakeServer):
    """Checkout Sessions + hosted page + signed webhooks; other `/v1/` calls go `upstream`."""

    def __init__(self, api_keys=frozenset({DEFAULT_KEY}), upstream: str | None = None,
                 webhook_delay: float = 0.2, async_delay: float = 0.5) -> None:
        super().__init__()
        self.api_keys = {api_keys} if isinstance(api_keys, str) else set(api_keys)
        self.upstream = upstream.rstrip("/") if upstream else None
        self.webhook_delay = webhook_delay
        self.async_delay = async_delay
        self.async_payment = False
        self.sessions: dict[str, Checkout] = {}
        self.payment_intents: dict[str, dict] = {}
        self.payment_methods: dict[str, dict] = {}
        self.customers: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.webhooks: list[tuple[str, str]] = []
        self.events: list[dict] = []
        self.sent_events: list[tuple[str, bytes, int | None]] = []
        self._faults: deque[StripeError] = deque()
        self._delays: deque[float] = deque()
        self._saved: dict[tuple[str, str], Saved] = {}
        self._in_flight: set[tuple[str, str]] = set()

    # test controls
    def add_webhook(self, url: str, secret: str) -> None:
        self.webhooks.append((url, secret))

    def fail_next(self, status: int, error: dict | None = None) -> None:
        """The next API call does nothing and answers `status` with this Stripe error."""
        error = dict(error or DEFAULT_ERRORS.get(status) or {
            "type": "api_error", "message": "An unknown error occurred (injected)."})
        self._faults.append(StripeError(status, error.pop("message"), **error))

    def delay_next(self, seconds: float) -> None:
        """The next API call is carried out at once but answered `seconds` late."""
        self._delays.append(seconds)

    def session(self, session_id: str) -> dict:
        return self.sessions[session_id].obj

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[tuple]:
        """Wait until `count` webhook deliveries were made; return `sent_events`."""
        return self.wait_sent(self.sent_events, count, timeout, None)

    # webhooks
    def send_event(self, event_type: str, obj: dict) -> bytes:
        """Sign and POST one event to every webhook now; returns the body sent."""
        event = {"id": new_id("evt_"), "object": "event", "type": event_type,
                 "api_version": API_VERSION, "created": int(time.time()), "livemode": False,
                 "pending_webhooks": len(self.webhooks), "data": {"object": copy.deepcopy(obj)},
                 "request": {"id": None, "idempotency_key": None}}
        body = json.dumps(event, indent=2).encode()
        with self.lock:
            self.events.append(event)
        for url, secret in list(self.webhooks):
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                       "Stripe-Signature": sign_stripe(secret, body, int(time.time()))}
            status = self.post(url, body, headers)[0]
            self.record(self.sent_events, (url, body, status))
        return body

    def _later(self, *steps) -> None:
        """Run `(delay, function)` steps one after another on the outbox thread."""
        if steps:
            (delay, function), rest = steps[0], steps[1:]

            def step():
                function()
                self._later(*rest)
            self.later(delay, step)

    # HTTP entry point
    def handle(self, request: Request) -> Response:
        if request.path.startswith(PAGE_PREFIX):
            return self._hosted_page(request, request.path[len(PAGE_PREFIX):])
        if not request.path.startswith("/v1/"):
            return Response("Not Found", status=404)
        delay = _pop(self._delays, 0.0)
        try:
            fault = _pop(self._faults, None)
            if fault is not None:
                raise fault
            api_key = self._authenticate(request)
            if request.method == "POST" and request.headers.get("Idempotency-Key"):
                response = self._idempotent(request, api_key)
            else:
                response = self._dispatch(request, api_key)
        except StripeError as error:
            response = error_response(error)
        time.sleep(delay)
        return response

    def _authenticate(self, request: Request) -> str:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        key = value.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key).decode().partition(":")[0]
            except ValueError:
                key = ""
        if not key:
            raise StripeError(401, "You did not provide an API key. You need to provide your "
                              "API key in the Authorization header, using Bearer auth (e.g. "
                              "'Authorization: Bearer YOUR_SECRET_KEY').")
        if key not in self.api_keys:
            raise StripeError(401, f"Invalid API Key provided: {mask_key(key)}")
        return key

    def _params(self, request: Request) -> dict:
        raw = request.get_data() if request.method == "POST" else request.query_string
        return parse_form(parse_qsl(raw.decode(), keep_blank_values=True))

    def _idempotent(self, request: Request, api_key: str) -> Response:
        slot = (api_key, request.headers["Idempotency-Key"])
        endpoint, params = f"{request.method} {request.path}", self._params(request)
        with self.lock:
            saved = self._saved.get(slot)
            if saved is None and slot in self._in_flight:
                raise StripeError(409, "There is currently another in-progress request using "
                                  f"this Idempotency-Key: {slot[1]}. Please try again later.",
                                  type="idempotency_error")
            if saved is None:
                self._in_flight.add(slot)
        if saved is not None:
            if saved.endpoint != endpoint or saved.params != params:
                raise StripeError(400, "Keys for idempotent requests can only be used with the "
                                  "same parameters they were first used with. Try using a key "
                                  f"other than '{slot[1]}' if you meant to execute a different "
                                  "request.", type="idempotency_error")
            response = Response(saved.body, status=saved.status, content_type=saved.content_type)
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Idempotency-Key"] = slot[1]
            return response
        try:
            try:
                response = self._dispatch(request, api_key)
            except StripeError as error:
                response = error_response(error)
            if response.status_code not in (400, 429):  # validation errors are not saved
                with self.lock:
                    self._saved[slot] = Saved(endpoint, params, response.status_code,
                                              response.get_data(), response.content_type)
            response.headers["Idempotency-Key"] = slot[1]
            return response
        finally:
            with self.lock:
                self._in_flight.discard(slot)

    def _dispatch(self, request: Request, api_key: str) -> Response:
        method, path = request.method, request.path.rstrip("/")
        if path.startswith("/v1/checkout/"):
            params = self._params(request)
            expand = params.pop("expand", []) if method == "GET" else params.get("expand", [])
            match = re.fullmatch(r"/v1/checkout/sessions(?:/([^/]+))?(/expire)?", path)
            if match and method == "POST" and not match[1]:
                return json_response(self._expand(self._create(params, api_key), expand, api_key))
            if match and method == "GET" and not match[1]:
                return json_response(self._list(params))
            if match and match[1]:
                checkout = self._get_checkout(match[1])
                if method == "POST" and match[2]:
                    self._expire(checkout)
                    return json_response(self._expand(checkout.obj, expand, api_key))
                if method == "GET" and not match[2]:
                    return json_response(self._expand(checkout.obj, expand, api_key))
            raise self._unrecognized(request)
        if self.upstream:
            return self._proxy(request)
        return self._local(request, method, path, api_key)

    def _unrecognized(self, request: Request) -> StripeError:
        return StripeError(404, f"Unrecognized request URL ({request.method}: {request.path}).",
                           code="resource_missing")

    # Checkout Sessions
    def _create(self, params: dict, api_key: str) -> dict:
        check_known(params, SESSION_PARAMS)
        mode = require(params, "mode", "mode")
        if mode not in ("payment", "setup", "subscription"):
            raise StripeError(400, "Invalid mode: must be one of payment, setup, or "
                              "subscription", param="mode")
        if mode != "payment":
            raise StripeError(400, f"FakeStripe supports only mode=payment, not {mode}.",
                              param="mode")
        items = require(params, "line_items", "line_items")
        if not isinstance(items, list):
            raise StripeError(400, "Invalid array", param="line_items")
        amount, currency = 0, None
        for index, item in enumerate(items):
            unit, item_currency, quantity = self._line_item(item, f"line_items[{index}]")
            if currency not in (None, item_currency):
                raise StripeError(400, "All line items must use the same currency.",
                                  param=f"line_items[{index}][price_data][currency]")
            amount, currency = amount + unit * quantity, item_currency
        success_url = check_url(params, "success_url", required=True)
        cancel_url = check_url(params, "cancel_url")
        now = int(time.time())
        expires_at = now + 86400
        if params.get("expires_at") not in (None, ""):
            expires_at = to_int(params["expires_at"], "expires_at")
            if expires_at < now + 1800:
                raise StripeError(400, "The `expires_at` timestamp must be at least 30 minutes "
                                  "from Checkout Session creation.", param="expires_at")
            if expires_at > now + 86400:
                raise StripeError(400, "The `expires_at` timestamp must be less than 24 hours "
                                  "from Checkout Session creation.", param="expires_at")
        customer, email = params.get("customer") or None, params.get("customer_email") or None
        if customer and email:
            raise StripeError(400, "You may only specify one of these parameters: customer, "
                              "customer_email.", code="parameters_exclusive", param="customer")
        if customer:
            self._fetch("customer", customer, api_key, param="customer")
        creation = params.get("customer_creation") or None
        if creation not in (None, "always", "if_required"):
            raise StripeError(400, "Invalid customer_creation: must be one of always or "
                              "if_required", param="customer_creation")
        pi_data = params.get("payment_intent_data") or {}
        check_known(pi_data, PI_DATA_PARAMS, "payment_intent_data")
        pi_data["metadata"] = check_metadata(pi_data.get("metadata"),
                                             "payment_intent_data[metadata]")
        if pi_data.get("setup_future_usage") not in (None, "on_session", "off_session"):
            raise StripeError(400, "Invalid payment_intent_data[setup_future_usage]: must be "
                              "one of on_session or off_session",
                              param="payment_intent_data[setup_future_usage]")
        reference = params.get("client_reference_id") or None
        if reference and len(reference) > 200:
            raise StripeError(400, "Invalid string: must be at most 200 characters",
                              param="client_reference_id")
        session_id = new_id("cs_test_", 58)
        obj = {
            "id": session_id, "object": "checkout.session", "mode": mode,
            "url": f"{self.url}{PAGE_PREFIX}{session_id}", "status": "open",
            "payment_status": "unpaid", "amount_subtotal": amount, "amount_total": amount,
            "currency": currency, "client_reference_id": reference,
            "metadata": check_metadata(params.get("metadata"), "metadata"),
            "customer": customer, "customer_creation": creation, "customer_email": email,
            "customer_details": {"email": email, "name": None, "phone": None, "address": None,
                                 "tax_exempt": "none", "tax_ids": []} if email else None,
            "payment_intent": None, "payment_method_types": ["card"],
            "expires_at": expires_at, "created": now, "success_url": success_url,
            "cancel_url": cancel_url, "livemode": False,
        }
        with self.lock:
            self.sessions[session_id] = Checkout(obj, api_key, pi_data)
        return obj

    def _line_item(self, item: Any, path: str) -> tuple[int, str, int]:
        if not isinstance(item, dict):
            raise StripeError(400, "Invalid hash", param=path)
        check_known(item, LINE_ITEM_PARAMS, path)
        if item.get("price"):
            raise not_found("price", item["price"], f"{path}[price]")
        price = require(item, "price_data", f"{path}[price_data]")
        check_known(price, PRICE_DATA_PARAMS, f"{path}[price_data]")
        currency = require(price, "currency", f"{path}[price_data][currency]")
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise StripeError(400, f"Invalid currency: {currency}. Stripe expects a three-letter "
                              "ISO currency code in lowercase.",
                              param=f"{path}[price_data][currency]")
        if price.get("unit_amount") is None:
            raise missing(f"{path}[price_data][unit_amount]")
        unit = to_int(price["unit_amount"], f"{path}[price_data][unit_amount]", minimum=1)
        step = ROUNDING.get(currency, 1)
        if unit % step:
            raise StripeError(400, f"Amounts in {currency.upper()} must be a multiple of {step}.",
                              param=f"{path}[price_data][unit_amount]")
        product = require(price, "product_data", f"{path}[price_data][product_data]")
        check_known(product, PRODUCT_DATA_PARAMS, f"{path}[price_data][product_data]")
        require(product, "name", f"{path}[price_data][product_data][name]")
        if item.get("quantity") is None:
            raise missing(f"{path}[quantity]")
        return unit, currency, to_int(item["quantity"], f"{path}[quantity]", minimum=1)

    def _get_checkout(self, session_id: str) -> Checkout:
        checkout = self.sessions.get(session_id)
        if checkout is None:
            raise not_found("checkout.session", session_id, "session")
        obj = checkout.obj
        if obj["status"] == "open" and time.time() >= obj["expires_at"]:
            self._expire(checkout, strict=False)
        return checkout

    def _expire(self, checkout: Checkout, strict: bool = True) -> None:
        obj = checkout.obj
        with self.lock:
            if obj["status"] != "open" and not strict:
                return
            if obj["status"] != "open":
                raise StripeError(400, "Only Checkout Sessions with a status in [\"open\"] can "
                                  f"be expired. This session has status \"{obj['status']}\".",
                                  param="session")
            obj.update(status="expired", url=None)
        snapshot = copy.deepcopy(obj)
        self._later((self.webhook_delay,
                     lambda: self.send_event("checkout.session.expired", snapshot)))

    def _list(self, params: dict) -> dict:
        limit = to_int(params.get("limit", "10"), "limit", minimum=1)
        found = [c.obj for c in reversed(self.sessions.values())
                 if all(c.obj.get(k) == params[k] for k in ("payment_intent", "customer")
                        if k in params)]
        return {"object": "list", "data": found[:limit], "has_more": len(found) > limit,
                "url": "/v1/checkout/sessions"}

    def _expand(self, obj: dict, expand: Any, api_key: str) -> dict:
        if not isinstance(expand, list):
            expand = [expand]
        obj = copy.deepcopy(obj)
        for path in expand:
            head, _, rest = path.partition(".")
            if head not in ("payment_intent", "customer") or rest not in ("", "payment_method"):
                raise StripeError(400, f"This property cannot be expanded ({path}).",
                                  param="expand")
            if isinstance(obj[head], str):
                obj[head] = self._fetch(head, obj[head], api_key, [rest] if rest else [])
        return obj

    def _fetch(self, kind: str, obj_id: str, api_key: str, expand=(), param="id") -> dict:
        if self.upstream:
            answer = self._upstream("GET", f"/v1/{kind}s/{obj_id}", api_key,
                                    [("expand[]", path) for path in expand])
            if answer.status_code == 404:
                raise not_found(kind, obj_id, param)
            if answer.status_code != 200:
                raise StripeError(answer.status_code, f"Upstream said: {answer.text[:300]}")
            return answer.json()
        store = {"payment_intent": self.payment_intents, "payment_method": self.payment_methods,
                 "customer": self.customers, "refund": self.refunds}[kind]
        if obj_id not in store:
            if kind == "customer" and obj_id.startswith("cus_"):
                return {"id": obj_id, "object": "customer"}  # the fake knows no Customers API
            raise not_found(kind, obj_id, param)
        obj = copy.deepcopy(store[obj_id])
        for path in expand:
            if isinstance(obj.get(path), str):
                obj[path] = self._fetch(path, obj[path], api_key)
        return obj

    # everything else
    def _upstream(self, method: str, path: str, api_key: str, data=None) -> requests.Response:
        headers = {"Authorization": f"Bearer {api_key}"}
        if method == "GET":
            return requests.get(self.upstream + path, params=data, headers=headers, timeout=30)
        return requests.request(method, self.upstream + path, data=data, headers=headers,
                                timeout=30)

    def _proxy(self, request: Request) -> Response:
        url = self.upstream + request.path
        if request.query_string:
            url += "?" + request.query_string.decode()
        headers = {name: request.headers[name] for name in (
            "Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version")
            if name in request.headers}
        answer = requests.request(request.method, url, data=request.get_data(),
                                  headers=headers, timeout=30)
        return Response(answer.content, status=answer.status_code,
                        content_type=answer.headers.get("Content-Type", "application/json"))

    def _local(self, request: Request, method: str, path: str, api_key: str) -> Response:
        params = self._params(request)
        expand = params.pop("expand", [])
        match = re.fullmatch(r"/v1/(payment_intent|payment_method|refund)s/([^/]+)", path)
        if method == "GET" and match:
            return json_response(self._fetch(match[1], match[2], api_key, expand))
        if method == "POST" and path == "/v1/refunds":
            return json_response(self._local_refund(params))
        raise self._unrecognized(request)

    def _local_refund(self, params: dict) -> dict:
        check_known(params, REFUND_PARAMS)
        pi_id = require(params, "payment_intent", "payment_intent")
        if pi_id not in self.payment_intents:
            raise not_found("payment_intent", pi_id, "payment_intent")
        intent = self.payment_intents[pi_id]
        if params.get("reason") not in (None, "duplicate", "fraudulent",
                                        "requested_by_customer"):
            raise StripeError(400, "Invalid reason: must be one of duplicate, fraudulent, or "
                              "requested_by_customer", param="reason")
        if intent["status"] != "succeeded":
            raise StripeError(400, f"PaymentIntent {pi_id} has status {intent['status']}; only "
                              "a succeeded payment can be refunded.", param="payment_intent")
        with self.lock:
            refunded = sum(r["amount"] for r in self.refunds.values()
                           if r["payment_intent"] == pi_id)
            left = intent["amount_received"] - refunded
            if left <= 0:
                raise StripeError(400, f"Charge {intent['latest_charge']} has already been "
                                  "refunded.", code="charge_already_refunded")
            amount = left
            if params.get("amount") not in (None, ""):
                amount = to_int(params["amount"], "amount", minimum=1)
            if amount > left:
                raise StripeError(400, f"Refund amount ({amount}) is greater than unrefunded "
                                  f"amount on charge ({left})", code="amount_too_large",
                                  param="amount")
            refund = {"id": new_id("re_"), "object": "refund", "amount": amount,
                      "currency": intent["currency"], "payment_intent": pi_id,
                      "charge": intent["latest_charge"], "status": "succeeded",
                      "reason": params.get("reason"), "created": int(time.time()),
                      "metadata": check_metadata(params.get("metadata"), "metadata"),
                      "balance_transaction": None}
            self.refunds[refund["id"]] = refund
        return refund

    # hosted page
    def _hosted_page(self, request: Request, session_id: str) -> Response:
        try:
            checkout = self._get_checkout(session_id)
        except StripeError:
            return Response("<!doctype html><title>Not found</title><p>No such Checkout "
                            "Session.</p>", status=404, mimetype="text/html")
        obj, error = checkout.obj, None
        with checkout.paying:
            if request.method == "POST" and obj["status"] == "open":
                if request.form.get("outcome") == "pay":
                    try:
                        self._pay(checkout, request.form)
                        target = obj["success_url"].replace("{CHECKOUT_SESSION_ID}", obj["id"])
                        return Response(status=303, headers={"Location": target})
                    except StripeError as declined:
                        error = declined.error["message"]
                else:
                    error = "Your card was declined."
        return Response(self._render(obj, request.form, error), mimetype="text/html")

    def _render(self, obj: dict, form, error: str | None) -> str:
        esc = html.escape
        amount = format_amount(obj["amount_total"], obj["currency"])
        body = f"<h1>Pay {esc(amount)}</h1>"
        if obj["client_reference_id"]:
            body += f"<p>Reference: <span id=\"reference\">{esc(obj['client_reference_id'])}"
            body += "</span></p>"
        if error:
            body += f'<p role="alert" class="error">{esc(error)}</p>'
        if obj["status"] != "open":
            body += f"<p>This Checkout Session is {esc(obj['status'])}.</p>"
        else:
            fields = [("email", "Email", obj["customer_email"] or "payer@example.com"),
                      ("name", "Name on card", "Test Payer"),
                      ("card_number", "Card number", "4242424242424242")]
            body += '<form method="post">'
            for name, label, default in fields:
                value = esc(form.get(name, default))
                body += (f'<p><label for="{name}">{label}</label> '
                         f'<input id="{name}" name="{name}" value="{value}"></p>')
            body += ('<button type="submit" name="outcome" value="pay">Pay</button> '
                     '<button type="submit" name="outcome" value="decline">Decline</button>'
                     "</form>")
        if obj["cancel_url"]:
            body += f'<p><a href="{esc(obj["cancel_url"])}">Cancel</a></p>'
        return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Pay '
                f"{esc(amount)}</title></head><body><main>{body}</main></body></html>")

    def _pay(self, checkout: Checkout, form) -> None:
        obj, pi_data = checkout.obj, checkout.pi_data
        number = re.sub(r"\s", "", form.get("card_number", "4242424242424242"))
        if not re.fullmatch(r"\d{16}", number):
            raise StripeError(402, "Your card number is invalid.", type="card_error",
                              code="invalid_number")
        if number in DECLINED_CARDS and not (self.upstream and number == CHARGE_FAILS):
            raise declined()
        name = form.get("name") or None
        email = form.get("email") or obj["customer_email"]
        customer = obj["customer"]
        if customer is None and (obj["customer_creation"] == "always"
                                 or pi_data.get("setup_future_usage")):
            customer = self._make("customer", checkout, {"name": name, "email": email})["id"]
        card = {"number": number, "exp_month": 12, "exp_year": time.gmtime().tm_year + 5,
                "cvc": "123"}
        method = self._make("payment_method", checkout, {
            "type": "card", "card": card, "billing_details": {"name": name, "email": email}})
        if customer:
            self._make(f"payment_methods/{method['id']}/attach", checkout, {"customer": customer})
        intent = self._make("payment_intent", checkout, {
            "amount": obj["amount_total"], "currency": obj["currency"], "customer": customer,
            "payment_method": method["id"], "metadata": pi_data["metadata"], "confirm": True})
        with self.lock:
            obj.update(status="complete", url=None, payment_intent=intent["id"],
                       customer=customer, payment_status="unpaid" if self.async_payment
                       else "paid", customer_details={
                           "email": email, "name": name, "phone": None, "address": None,
                           "tax_exempt": "none", "tax_ids": []})
        snapshot = copy.deepcopy(obj)
        steps = [(self.webhook_delay,
                  lambda: self.send_event("checkout.session.completed", snapshot))]
        if self.async_payment:
            def succeed():
                with self.lock:
                    obj["payment_status"] = "paid"
                    if intent["id"] in self.payment_intents:
                        intent.update(status="succeeded", amount_received=intent["amount"])
                self.send_event("checkout.session.async_payment_succeeded", obj)
            steps.append((self.async_delay, succeed))
        self._later(*steps)

    def _make(self, kind: str, checkout: Checkout, data: dict) -> dict:
        """Create an object upstream (for real) or locally; a declined card raises 402."""
        if self.upstream:
            path = kind if "/" in kind else f"{kind}s"
            answer = self._upstream("POST", f"/v1/{path}", checkout.api_key, encode_form(data))
            if answer.status_code == 402:
                raise declined()
            if answer.status_code != 200:
                raise RuntimeError(f"localstripe refused POST /v1/{path}: {answer.text[:300]}")
            return answer.json()
        now = int(time.time())
        if kind == "customer":
            obj = {"id": new_id("cus_", 14), "object": "customer", "created": now, **data}
            self.customers[obj["id"]] = obj
        elif kind == "payment_method":
            number = data["card"]["number"]
            obj = {"id": new_id("pm_"), "object": "payment_method", "type": "card",
                   "created": now, "customer": None, "livemode": False, "metadata": {},
                   "billing_details": data["billing_details"],
                   "card": {"brand": "visa", "last4": number[-4:], "funding": "credit",
                            "exp_month": data["card"]["exp_month"],
                            "exp_year": data["card"]["exp_year"], "country": "US"}}
            self.payment_methods[obj["id"]] = obj
        elif kind == "payment_intent":
            pending = self.async_payment
            obj = {"id": new_id("pi_"), "object": "payment_intent", "amount": data["amount"],
                   "amount_received": 0 if pending else data["amount"],
                   "status": "processing" if pending else "succeeded", "currency": data["currency"],
                   "customer": data["customer"], "payment_method": data["payment_method"],
                   "metadata": dict(data["metadata"]), "created": now,
                   "latest_charge": new_id("ch_"), "livemode": False,
                   "client_secret": None, "capture_method": "automatic"}
            self.payment_intents[obj["id"]] = obj
        else:  # attach
            obj = self.payment_methods[kind.split("/")[1]]
            obj["customer"] = data["customer"]
        return obj

