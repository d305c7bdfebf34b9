"""Jinja filters: money, local times, status labels, and plain words for gateway failures."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_time, get_timezone_name

from . import i18n
from .i18n import staff_lazy_gettext as _l
from .money import format_money
from .phones import display as phone_display

STATUS_LABELS = {
    "created": _l("Awaiting payment"),
    "partially_paid": _l("Partly paid"),
    "paid": _l("Paid"),
    "expired": _l("Expired"),
    "cancelled": _l("Cancelled"),
    "pending": _l("Processing"),
    "succeeded": _l("Succeeded"),
    "failed": _l("Failed"),
    "partially_refunded": _l("Partly refunded"),
    "refunded": _l("Refunded"),
}


def money(minor: int, currency: str, locale: str = "en_IN") -> str:
    return format_money(minor, currency, locale)


def local_time(value: datetime | None, tz: str = "Asia/Kolkata", locale: str = "en_IN",
               fmt: str = "d MMM yyyy, h:mm a") -> str:
    if value is None:
        return ""
    return format_datetime(value.astimezone(ZoneInfo(tz)), fmt, locale=locale)


def patient_money(minor: int, currency: str, lab) -> str:
    """An amount in the page's language, grouped as in the lab's country (hi + IN: lakh)."""
    lab_locale = lab.locale if lab is not None else None
    return format_money(minor, currency, i18n.format_locale(i18n.current(), lab_locale))


def zoned_time(value: datetime | None, tz: str, locale: str, *, with_zone: bool = True) -> str:
    """'3 Dec 2026, 4:30 pm India Standard Time': the locale's own order, the zone named."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(tz))
    date = format_date(local, "medium", locale=locale)
    time = format_time(local, "short", locale=locale)
    joined = _datetime_format(locale).format(time, date)
    if not with_zone:
        return joined
    return f"{joined} ({get_timezone_name(local, 'long', locale=locale)})"


@lru_cache(maxsize=256)
def _datetime_format(locale: str) -> str:
    return str(Locale.parse(locale).datetime_formats["medium"])


def patient_time(value: datetime | None, lab) -> str:
    return zoned_time(value, lab.timezone, i18n.format_locale(i18n.current(), lab.locale))


def status_label(status: str) -> str:
    return str(STATUS_LABELS.get(str(status), str(status).replace("_", " ").capitalize()))


def N_(text: str) -> str:
    """Marks a patient text for the catalogs; translated when shown."""
    return text


# A gateway's failure text, read for its gist: first match wins; anything else is "declined".
FAILURE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("insufficient_funds", re.compile(r"insufficient|not enough|balance|funds", re.I)),
    ("authentication", re.compile(r"3-?d|authenticat|\botp\b|verif|pin\b", re.I)),
    ("card", re.compile(r"card.*(expired|invalid|incorrect|number)|expired card|cvc|cvv"
                        r"|security code|invalid card|do not honou?r", re.I)),
    ("cancelled", re.compile(r"cancel|closed|abandon|dropped|timed? ?out|expired", re.I)),
    ("unavailable", re.compile(r"unavailable|server|error|try again|auto_failed|network", re.I)),
)
PATIENT_FAILURES = {
    "insufficient_funds": N_("Your bank said there was not enough money in the account."),
    "authentication": N_("The security check with your bank (OTP or password) was not "
                         "completed."),
    "card": N_("The card was not accepted. Please check its number, expiry date and security "
               "code, or use another card."),
    "cancelled": N_("The payment was stopped before it was finished."),
    "unavailable": N_("The bank or the payment service had a problem."),
    "declined": N_("Your bank declined the payment."),
}
STAFF_FAILURES = {
    "insufficient_funds": _l("Not enough money in the patient's account"),
    "authentication": _l("The patient's bank security check (OTP) was not completed"),
    "card": _l("Card details were not accepted"),
    "cancelled": _l("Stopped on the payment page before it was finished"),
    "unavailable": _l("A problem at the bank or payment service"),
    "declined": _l("Declined by the patient's bank"),
}


def failure_kind(reason: str | None) -> str:
    for kind, pattern in FAILURE_PATTERNS:
        if reason and pattern.search(reason):
            return kind
    return "declined"


def patient_failure(reason: str | None) -> str:
    """What a patient reads about a failed payment: never the gateway's own words."""
    return i18n.gettext(PATIENT_FAILURES[failure_kind(reason)])


def staff_failure(reason: str | None) -> str:
    return str(STAFF_FAILURES[failure_kind(reason)])


def gateway_label(name: str) -> str:
    """A gateway as people know it ("PhonePe", not "phonepe_v1")."""
    from gateways import GATEWAYS

    if name == "counter":
        return str(_l("At the lab's desk"))
    cls = GATEWAYS.get(name)
    return cls.display_name if cls else name


def init_app(app) -> None:
    app.jinja_env.filters.update(money=money, local_time=local_time, status_label=status_label,
                                patient_money=patient_money, patient_time=patient_time,
                                patient_failure=patient_failure, staff_failure=staff_failure,
                                phone_display=phone_display)
    app.jinja_env.globals["status_label"] = status_label
    app.jinja_env.globals["gateway_label"] = gateway_label
