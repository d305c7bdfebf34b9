"""Jinja filters: money, local times and status labels."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_time, get_timezone_name

from . import i18n
from .i18n import staff_lazy_gettext as _l
from .money import format_money

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


def init_app(app) -> None:
    app.jinja_env.filters.update(money=money, local_time=local_time, status_label=status_label,
                                patient_money=patient_money, patient_time=patient_time)
    app.jinja_env.globals["status_label"] = status_label
