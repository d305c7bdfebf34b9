"""The dashboard's 30-day bar charts drawn as inline SVG (no chart library, no script), and the
words and numbers around them, formatted by Babel in the lab's locale."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from babel.dates import format_skeleton, format_timedelta
from babel.lists import format_list
from babel.numbers import format_percent

WIDTH, HEIGHT, GAP = 300, 120, 2  # the SVG's own units; it scales to its box


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    day: date
    value: int


def bars(values: list[tuple[date, int]]) -> list[Bar]:
    """One bar per day, scaled so the largest day fills the height (empty days: no bar)."""
    top = max((value for _, value in values), default=0) or 1
    step = WIDTH / max(len(values), 1)
    drawn = []
    for i, (day, value) in enumerate(values):
        height = round(HEIGHT * value / top, 2)
        drawn.append(Bar(x=round(i * step + GAP / 2, 2), y=round(HEIGHT - height, 2),
                         width=round(step - GAP, 2), height=height, day=day, value=value))
    return drawn


def peak(values: list[tuple[date, int]]) -> tuple[date, int]:
    """The day with the largest value (the latest of equals)."""
    return max(reversed(values), key=lambda item: item[1])


def short_day(day: date, locale: str) -> str:
    """'Fri, 4 Dec' in the lab's locale."""
    return format_skeleton("MMMEd", day, locale=locale)


def duration(seconds: float | None, locale: str) -> str:
    """'1 hour, 25 minutes', '3 days, 2 hours', '40 seconds' in the lab's locale."""
    if seconds is None:
        return ""
    total = round(seconds)
    if total < 60:
        return format_timedelta(timedelta(seconds=total), threshold=2, locale=locale)
    days, rest = divmod(total // 60, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour"), (minutes, "minute")]
    if days:
        parts = parts[:2]  # '3 days, 2 hours': minutes no longer matter
    words = [format_timedelta(timedelta(**{unit + "s": n}), granularity=unit, threshold=2,
                              locale=locale) for n, unit in parts if n]
    return format_list(words, style="unit", locale=locale)


def percent(share: float, locale: str) -> str:
    """'62%' in the lab's locale."""
    return format_percent(share, locale=locale)
