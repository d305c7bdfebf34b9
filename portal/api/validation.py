"""Parsing API request bodies: every field's problem is reported at once, by field name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email

from .. import i18n
from ..edge import MAX_ROW_ID
from ..money import is_known_currency
from ..phones import to_e164
from ..services import messages
from ..services.links import NewLink
from .errors import ApiError, invalid

MAX_AMOUNT = 10**12
MAX_LIFETIME = timedelta(days=90)
MIN_LIFETIME = timedelta(minutes=5)
CHANNELS = ("email", "sms", "whatsapp")
INITIATE_FIELDS = {"amount", "currency", "bill_reference", "customer", "expires_at",
                   "expires_in", "gateway", "notify", "allow_partial", "description", "metadata",
                   "language"}
REFUND_FIELDS = {"payment_id", "amount", "reason"}


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    return body


def _unknown(body: dict, known: set[str], fields: dict[str, str]) -> None:
    for name in sorted(set(body) - known):
        fields[name[:100]] = "Unknown field."


def _text(body: dict, name: str, fields: dict[str, str], *, max_len: int,
          required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            fields[name] = "Required."
        return None
    if not isinstance(value, str):
        fields[name] = "Must be a string."
        return None
    value = value.strip()
    if required and not value:
        fields[name] = "Required."
    elif len(value) > max_len:
        fields[name] = f"At most {max_len} characters."
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def amount(value: Any, name: str, fields: dict[str, str]) -> int | None:
    number = _int(value)
    if value is None:
        fields[name] = "Required."
    elif number is None:
        fields[name] = "Must be an integer in minor units (e.g. 123450 for INR 1,234.50)."
    elif not 0 < number <= MAX_AMOUNT:
        fields[name] = "Must be more than zero."
    else:
        return number
    return None


def _customer(value: Any, country: str, fields: dict[str, str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {"name": None, "phone": None, "email": None}
    if not isinstance(value, dict):
        fields["customer"] = "Required: an object with name and a phone or email."
        return out
    for name in sorted(set(value) - {"name", "phone", "email", "external_id"}):
        fields[f"customer.{name[:50]}"] = "Unknown field."
    sub: dict[str, str] = {}
    out["name"] = _text(value, "name", sub, max_len=200, required=True)
    phone = _text(value, "phone", sub, max_len=30)
    email = _text(value, "email", sub, max_len=254)
    out["external_id"] = _text(value, "external_id", sub, max_len=100) or None
    if phone and "phone" not in sub:
        out["phone"] = to_e164(phone, country)
        if out["phone"] is None:
            sub["phone"] = "Not a valid phone number."
    if email and "email" not in sub:
        try:
            out["email"] = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError:
            sub["email"] = "Not a valid email address."
    fields.update({f"customer.{k}": v for k, v in sub.items()})
    return out


def _expiry(body: dict, default_hours: int, now: datetime, fields: dict[str, str]) -> datetime:
    if "expires_at" in body and "expires_in" in body:
        fields["expires_at"] = "Give expires_at or expires_in, not both."
        return now
    if "expires_in" in body:
        seconds = _int(body["expires_in"])
        if seconds is None:
            fields["expires_in"] = "Must be a whole number of seconds."
            return now
        expires = now + timedelta(seconds=min(max(seconds, 0), 10**9))
        name = "expires_in"
    elif "expires_at" in body:
        try:
            expires = datetime.fromisoformat(str(body["expires_at"]).replace("Z", "+00:00"))
        except ValueError:
            fields["expires_at"] = "Must be an ISO 8601 time with a timezone."
            return now
        if expires.tzinfo is None:
            fields["expires_at"] = "Must be an ISO 8601 time with a timezone."
            return now
        try:
            expires = expires.astimezone(UTC)
        except OverflowError:  # year 1 east of UTC, or year 9999 west of it
            fields["expires_at"] = "A link can stay open for at most 90 days."
            return now
        name = "expires_at"
    else:
        return now + timedelta(hours=default_hours)
    if expires < now + MIN_LIFETIME:
        fields[name] = "Must be at least 5 minutes from now."
    elif expires > now + MAX_LIFETIME:
        fields[name] = "A link can stay open for at most 90 days."
    return expires


def _metadata(value: Any, fields: dict[str, str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 20 or not all(
            isinstance(k, str) and 0 < len(k) <= 40 and isinstance(v, str) and len(v) <= 500
            for k, v in value.items()):
        fields["metadata"] = "At most 20 string values, keys up to 40 and values up to 500 " \
                             "characters."
        return {}
    return dict(value)


def parse_initiate(body: Any, *, lab, gateways: set[str], now: datetime
                   ) -> tuple[NewLink, dict[str, str]]:
    """A NewLink and its metadata, or ApiError 422 listing every field's problem."""
    body = require_object(body)
    fields: dict[str, str] = {}
    _unknown(body, INITIATE_FIELDS, fields)
    minor = amount(body.get("amount"), "amount", fields)
    currency = _text(body, "currency", fields, max_len=3, required=True)
    if currency and "currency" not in fields:
        if currency != currency.upper() or not is_known_currency(currency):
            fields["currency"] = "Must be an ISO 4217 code in capitals, e.g. INR."
    bill = _text(body, "bill_reference", fields, max_len=100, required=True)
    description = _text(body, "description", fields, max_len=500) or ""
    customer = _customer(body.get("customer"), lab.country, fields)
    expires_at = _expiry(body, lab.default_expiry_hours, now, fields)
    gateway = _text(body, "gateway", fields, max_len=32)
    if gateway is not None and "gateway" not in fields and gateway not in gateways:
        fields["gateway"] = "Not a gateway this lab has set up."
    notify = body.get("notify", [])
    if not isinstance(notify, list) or not all(c in CHANNELS for c in notify):
        fields["notify"] = "A list of channels: email, sms, whatsapp."
        notify = []
    if "whatsapp" in notify and not messages.whatsapp_ready(lab):
        fields["notify"] = ("WhatsApp is not set up for this lab: an admin names its approved "
                            "templates on the Messages page.")
    for channel, contact in (("sms", "phone"), ("whatsapp", "phone"), ("email", "email")):
        if channel in notify and not customer.get(contact) and f"customer.{contact}" not in fields:
            fields[f"customer.{contact}"] = f"Required to notify by {channel}."
    allow_partial = body.get("allow_partial", False)
    if not isinstance(allow_partial, bool):
        fields["allow_partial"] = "Must be true or false."
    metadata = _metadata(body.get("metadata"), fields)
    language = body.get("language")
    if language is not None and (not isinstance(language, str)
                                 or language not in i18n.LANGUAGES):
        fields["language"] = "One of: " + ", ".join(i18n.LANGUAGES) + "."
    if fields:
        raise invalid(fields)
    link = NewLink(patient_name=customer["name"], phone=customer["phone"],
                   email=customer["email"], amount=minor, currency=currency,
                   bill_reference=bill, description=description, expires_at=expires_at,
                   allow_partial=allow_partial, external_id=customer.get("external_id"),
                   gateway=gateway, notify=tuple(dict.fromkeys(notify)), language=language)
    return link, metadata


def parse_refund(body: Any) -> tuple[int, int, str]:
    body = require_object(body)
    fields: dict[str, str] = {}
    _unknown(body, REFUND_FIELDS, fields)
    payment_id = _int(body.get("payment_id"))
    if payment_id is None or not 0 < payment_id <= MAX_ROW_ID:
        fields["payment_id"] = "Required: the id of a payment."
    minor = amount(body.get("amount"), "amount", fields)
    reason = _text(body, "reason", fields, max_len=200) or ""
    if fields:
        raise invalid(fields)
    return payment_id, minor, reason
