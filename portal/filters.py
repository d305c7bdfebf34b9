"""Jinja filters: money, local times, status labels, and plain words for gateway failures."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import (
    format_date,
    format_datetime,
    format_time,
    get_timezone_name,
    parse_pattern,
    tokenize_pattern,
)

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
    local = value.astimezone(ZoneInfo(tz))
    compiled = _compiled_datetime_format(fmt, locale)
    if compiled is not None:
        return compiled(local)
    return format_datetime(local, fmt, locale=locale)


# Moments a compiled pattern must write exactly as Babel does before it is trusted: every
# month, both halves of the day and their edges, one- and two-digit days, minutes, seconds.
DATETIME_PROBES = tuple(datetime(2026, month, 1 + (month * 5) % 28, hour, minute, second,
                                 tzinfo=UTC)
                        for month in range(1, 13)
                        for hour, minute, second in ((0, 0, 0), (9, 5, 7), (11, 59, 59),
                                                     (12, 0, 30), (13, 10, 9), (23, 45, 12))) \
    + (datetime(999, 7, 4, 6, 3, 2, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))


@lru_cache(maxsize=256)
def _compiled_datetime_format(fmt: str, locale: str) -> Callable[[datetime], str] | None:
    """A date pattern of numbers, month names and am/pm as plain string work, its names looked
    up once (Babel re-reads the locale's data for every field of every date: ~10 µs a date,
    and a list page shows dozens). None, and Babel's path, for any other field, or where any
    probe moment comes out differently."""
    loc = Locale.parse(locale)
    parts: list[Callable[[datetime], str]] = []
    for kind, token in tokenize_pattern(fmt):
        if kind == "chars":
            parts.append(lambda _v, text=str(token): text)
            continue
        char, width = token
        field = _datetime_field(str(char), int(width), loc)
        if field is None:
            return None
        parts.append(field)

    def compiled(value: datetime) -> str:
        return "".join([part(value) for part in parts])

    babel_pattern = parse_pattern(fmt)
    if any(compiled(moment) != babel_pattern.apply(moment, loc) for moment in DATETIME_PROBES):
        return None
    return compiled


def _datetime_field(char: str, width: int, loc: Locale) -> Callable[[datetime], str] | None:
    """One field of a date pattern as a function of the moment, or None if not one of ours."""
    number = f"{{:0{width}d}}".format
    if width <= 2 and char in "dHmsh":
        if char == "h":
            return lambda v: number(v.hour % 12 or 12)
        attribute = {"d": "day", "H": "hour", "m": "minute", "s": "second"}[char]
        return lambda v: number(getattr(v, attribute))
    if char == "M" and width <= 2:
        return lambda v: number(v.month)
    if char == "y":
        return (lambda v: number(v.year % 100)) if width == 2 else (lambda v: number(v.year))
    if char == "M" and width in (3, 4):  # the locale's month names, as Babel writes them
        months = {m: format_datetime(datetime(2001, m, 15, 12), "M" * width, locale=loc)
                  for m in range(1, 13)}
        return lambda v: months[v.month]
    if char == "a" and width <= 3:
        halves = {pm: format_datetime(datetime(2001, 1, 15, 15 if pm else 9), "a" * width,
                                      locale=loc) for pm in (False, True)}
        return lambda v: halves[v.hour >= 12]
    return None


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
