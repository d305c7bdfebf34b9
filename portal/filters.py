"""Jinja filters: money, local times and status labels."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from .money import format_money

STATUS_LABELS = {
    "created": "Awaiting payment",
    "partially_paid": "Partly paid",
    "paid": "Paid",
    "expired": "Expired",
    "cancelled": "Cancelled",
    "pending": "Processing",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "partially_refunded": "Partly refunded",
    "refunded": "Refunded",
}


def money(minor: int, currency: str, locale: str = "en_IN") -> str:
    return format_money(minor, currency, locale)


def local_time(value: datetime | None, tz: str = "Asia/Kolkata", locale: str = "en_IN",
               fmt: str = "d MMM yyyy, h:mm a") -> str:
    if value is None:
        return ""
    return format_datetime(value.astimezone(ZoneInfo(tz)), fmt, locale=locale)


def status_label(status: str) -> str:
    return STATUS_LABELS.get(str(status), str(status).replace("_", " ").capitalize())


def init_app(app) -> None:
    app.jinja_env.filters.update(money=money, local_time=local_time, status_label=status_label)
    app.jinja_env.globals["status_label"] = status_label
