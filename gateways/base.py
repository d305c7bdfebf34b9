"""The interface every gateway module implements, and the plain data it exchanges.

Gateways take frozen dataclasses in and give frozen dataclasses out. Nothing here knows about
Flask, SQLAlchemy or the portal's models: the portal maps its rows to these objects.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar

from .http import HttpClient

DEFAULT_TIMEOUT = (5.0, 20.0)  # (connect, read) seconds for every gateway call


class GatewayError(Exception):
    """A gateway call failed; `message` is safe to show to staff."""

    def __init__(self, message: str, *, code: str = "gateway_error", retryable: bool = False,
                 http_status: int | None = None, raw: Any = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.http_status = http_status
        self.raw = raw


class SignatureError(GatewayError):
    """A webhook or return could not be authenticated; nothing in it may be trusted."""

    def __init__(self, message: str = "signature verification failed"):
        super().__init__(message, code="bad_signature")


class MalformedPayload(GatewayError):
    """A webhook body that cannot be parsed at all."""

    def __init__(self, message: str = "malformed payload"):
        super().__init__(message, code="malformed_payload")


class UnknownStatus(GatewayError):
    """The gateway reported a status our table does not know; never defaulted."""

    def __init__(self, value: str):
        super().__init__(f"unknown gateway status {value!r}", code="unknown_status")


class IgnoredEvent(GatewayError):
    """A webhook about something the portal does not track: acknowledged, nothing changes."""

    def __init__(self, message: str = "event not tracked"):
        super().__init__(message, code="ignored")


class Unsupported(GatewayError):
    def __init__(self, operation: str):
        super().__init__(f"{operation} is not supported by this gateway", code="unsupported")


class Capability(enum.StrEnum):
    REFUND = "refund"
    PARTIAL_REFUND = "partial_refund"
    SAVED_METHODS = "saved_methods"
    CANCEL_CHECKOUT = "cancel_checkout"
    SIGNED_RETURN = "signed_return"


class EventStatus(enum.StrEnum):
    """What a gateway says happened to one payment attempt, in our words."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    secret: bool = False
    required: bool = True
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class CheckoutRequest:
    reference: str
    amount: int
    currency: str
    description: str
    bill_reference: str
    merchant_name: str
    return_url: str
    cancel_url: str
    notify_url: str
    expires_at: datetime
    idempotency_key: str
    customer_name: str = ""
    customer_email: str = ""
    customer_phone: str = ""
    save_method: bool = False
    gateway_customer_id: str = ""


@dataclass(frozen=True)
class HostedForm:
    """A form the patient's browser must post to the gateway (no redirect URL exists)."""

    action: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Checkout:
    checkout_id: str
    redirect_url: str | None = None
    form: HostedForm | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayEvent:
    """One fact reported by a gateway, by webhook, signed return or status fetch."""

    dedupe_id: str | None
    type: str
    reference: str
    status: EventStatus
    amount: int | None
    currency: str | None
    checkout_id: str | None = None
    transaction_id: str | None = None
    refund_id: str | None = None
    refund_reference: str | None = None
    method: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundRequest:
    reference: str
    transaction_id: str | None
    amount: int
    currency: str
    reason: str
    idempotency_key: str


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    status: EventStatus
    amount: int
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SavedMethod:
    """A payment method stored at the gateway: references and display details, no card data."""

    gateway_customer_id: str
    token: str
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True)
class SavedMethodCharge:
    reference: str
    amount: int
    currency: str
    description: str
    method: SavedMethod
    idempotency_key: str


def unix_time(value: Any) -> datetime:
    """A gateway's Unix timestamp (seconds) as UTC; MalformedPayload when it is no real time."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedPayload(f"timestamp {value!r:.40} is not whole seconds")
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (ValueError, OverflowError, OSError):  # OSError: beyond the platform's time_t
        raise MalformedPayload(f"timestamp {value!r:.40} is out of range") from None


def whole_amount(value: Any) -> int:
    """An amount in minor units as the wire gives it: an integer, never a float or a bool."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise MalformedPayload(f"amount {value!r:.40} is not a whole number of minor units")
    return value


def lookup_status(table: Mapping[str, EventStatus], value: Any) -> EventStatus:
    """A status from a gateway's table; an unknown value raises instead of being defaulted."""
    if not isinstance(value, str) or value not in table:
        raise UnknownStatus(str(value))
    return table[value]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header whatever its case: werkzeug's headers ignore it, a plain dict does not."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def load_json(raw: bytes | str, what: str, *,
              parse_float: Callable[[str], Any] | None = None) -> Any:
    """A body as JSON; MalformedPayload("not <what>") when it is none."""
    try:
        return json.loads(raw, parse_float=parse_float)
    except (UnicodeDecodeError, ValueError):
        raise MalformedPayload(f"not {what}") from None


def json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """A body that must be one JSON object, as every gateway's events are."""
    body = load_json(raw, what)
    if not isinstance(body, dict):
        raise MalformedPayload(f"not {what}")
    return body


def hmac_sha256_hex(key: str | bytes, message: bytes) -> str:
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Gateway(ABC):
    """One payment gateway, configured with one lab's credentials."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    credential_fields: ClassVar[tuple[CredentialField, ...]]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    webhook_events: ClassVar[tuple[str, ...]] = ()
    default_api_base: ClassVar[str] = ""
    # The host of the gateway's test environment, where it differs from the live one; the
    # portal uses it for labs whose keys are marked "test".
    sandbox_api_base: ClassVar[str] = ""

    # Where the patient's return and webhooks leave reconciliation to polling, how long after
    # the checkout to ask for the status (seconds), and when to stop asking.
    # After the last delay, hourly. No cut-off: the link's expiry (plus a grace) decides.
    status_check_delays: ClassVar[tuple[int, ...]] = (20, 60, 300, 900, 3600)
    status_check_cutoff: ClassVar[int | None] = None
    # Seconds after the patient's unsigned return before the status is asked for.
    return_check_delay: ClassVar[int] = 5
    # What the gateway expects as the body of a successful webhook answer (body, mimetype);
    # None for the portal's JSON acknowledgement.
    webhook_ack: ClassVar[tuple[str, str] | None] = None
    # Whether parse_webhook calls the gateway's API (PhonePe confirms each callback there):
    # no database transaction may stay open across it.
    webhook_calls_api: ClassVar[bool] = False

    def __init__(self, credentials: Mapping[str, str], *, api_base: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, webhook_url: str = ""):
        missing = [f.name for f in self.credential_fields
                   if f.required and not credentials.get(f.name)]
        if missing:
            raise GatewayError(f"missing credentials: {', '.join(missing)}", code="not_configured")
        self.credentials = dict(credentials)
        self.api_base = (api_base or self.api_base_for(self.credentials)).rstrip("/")
        self.timeout = timeout
        self.webhook_url = webhook_url  # our endpoint, for gateways that sign over it (Square)
        self.configure()

    @classmethod
    def api_base_for(cls, credentials: Mapping[str, str]) -> str:
        """The host when the portal names none; PayTabs' depends on the account's region."""
        return cls.default_api_base

    def configure(self) -> None:
        """Checks what the gateway needs beyond present credentials and builds its SDK client;
        raises GatewayError(code="not_configured") for settings it cannot work with."""
        return None

    @cached_property
    def http(self) -> HttpClient:
        """Plain HTTP to `api_base`, for gateways without an SDK."""
        return HttpClient(self.api_base, timeout=self.timeout, error_class=GatewayError)

    def __repr__(self) -> str:  # never show credentials
        return f"<{type(self).__name__} api_base={self.api_base!r}>"

    @classmethod
    def secret_values(cls, credentials: Mapping[str, str]) -> list[str]:
        return [credentials[f.name] for f in cls.credential_fields
                if f.secret and credentials.get(f.name)]

    @classmethod
    @abstractmethod
    def extract_reference(cls, headers: Mapping[str, str], raw_body: bytes) -> str:
        """Our reference from an unverified webhook, only to find whose secret verifies it."""

    @classmethod
    def extract_transaction_id(cls, headers: Mapping[str, str], raw_body: bytes) -> str | None:
        """The gateway's payment id from an unverified webhook that carries no reference."""
        return None

    @abstractmethod
    def create_checkout(self, request: CheckoutRequest) -> Checkout: ...

    @abstractmethod
    def parse_webhook(self, headers: Mapping[str, str], raw_body: bytes) -> GatewayEvent: ...

    def verify_return(self, params: Mapping[str, str]) -> GatewayEvent | None:
        """The signed browser return, for gateways that sign it; others fetch status."""
        return None

    @abstractmethod
    def fetch_status(self, reference: str, checkout_id: str | None = None) -> GatewayEvent: ...

    def refund(self, request: RefundRequest) -> RefundResult:
        raise Unsupported("refund")

    def cancel_checkout(self, reference: str, checkout_id: str | None) -> None:
        """Closes the hosted checkout so a late payment fails (Capability.CANCEL_CHECKOUT)."""
        raise Unsupported("cancelling a checkout")

    def saved_method_from_payment(self, transaction_id: str) -> SavedMethod | None:
        """The method a consenting patient saved while paying (Capability.SAVED_METHODS)."""
        raise Unsupported("saving payment methods")

    def charge_saved_method(self, charge: SavedMethodCharge) -> GatewayEvent:
        raise Unsupported("charging a saved payment method")

    def delete_saved_method(self, method: SavedMethod) -> None:
        raise Unsupported("deleting a saved payment method")

    def test_connection(self) -> str:
        """One cheap authenticated call; returns what to tell the admin, or raises GatewayError."""
        raise Unsupported("testing the connection")
