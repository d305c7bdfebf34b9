"""Amounts and dates on list pages go through formats compiled once per locale: they must
write exactly what Babel writes, and fall back to Babel wherever they cannot."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime

from portal import i18n
from portal.filters import _compiled_datetime_format, local_time
from portal.money import COMMON_CURRENCIES, _babel_format, _compiled_format, format_money

LAB_LOCALES = ["en_IN", "en_AE", "en_HK", "en_PH", "en_US", "ar_BH", "en_GB", "de_DE",
               "fr_FR", "es_ES"]
LOCALES = sorted({i18n.format_locale(code, lab) for code in i18n.LANGUAGES
                  for lab in LAB_LOCALES} | {"de_CH", "fr_CH", "ja", "ru", "pt_BR"})


def amounts(seed: str) -> list[int]:
    rng = random.Random(seed)
    return [0, 1, 5, 99, 100, 12345678] + [rng.randrange(10 ** rng.randrange(1, 16))
                                           for _ in range(60)]


@pytest.mark.parametrize("locale", LOCALES)
def test_compiled_money_writes_what_babel_writes(locale):
    for currency in COMMON_CURRENCIES:
        for minor in amounts(locale + currency):
            assert format_money(minor, currency, locale) == _babel_format(minor, currency,
                                                                          locale)


def test_compiled_money_is_used_for_the_patient_locales_and_not_for_odd_ones():
    for code in i18n.LANGUAGES:
        for lab in ("en_IN", "en_AE", "en_HK", "en_PH", "en_US"):
            assert _compiled_format("INR", i18n.format_locale(code, lab)) is not None
    # Babel writes de_CH amounts without their ’ grouping: the compiled format disagrees on
    # a probe, so Babel's own path (and its output) is kept there.
    assert _compiled_format("USD", "de_CH") is None
    assert format_money(123456789, "USD", "de_CH") == _babel_format(123456789, "USD", "de_CH")


def test_negative_and_non_integer_amounts_take_babels_path():
    assert format_money(-123450, "INR", "en_IN") == _babel_format(-123450, "INR", "en_IN")
    assert format_money(True, "JPY", "en_US") == _babel_format(True, "JPY", "en_US")


FORMATS = ["d MMM yyyy, h:mm a", "d MMM, h:mm:ss a", "dd/MM/yy HH:mm", "MMMM d, y"]


@pytest.mark.parametrize("locale", LOCALES)
def test_compiled_dates_write_what_babel_writes(locale):
    rng = random.Random(locale)
    moments = [datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**9))
               for _ in range(40)]
    for fmt in FORMATS:
        assert _compiled_datetime_format(fmt, locale) is not None, fmt
        for moment in moments:
            for zone in ("Asia/Kolkata", "Asia/Dubai", "America/New_York"):
                expected = format_datetime(moment.astimezone(ZoneInfo(zone)), fmt,
                                           locale=locale)
                assert local_time(moment, zone, locale, fmt) == expected


def test_dates_with_other_fields_take_babels_path():
    moment = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
    assert _compiled_datetime_format("EEE d MMM", "en_IN") is None
    assert local_time(moment, "Asia/Kolkata", "en_IN", "EEE d MMM") == "Mon 2 Mar"
    assert local_time(None) == ""
