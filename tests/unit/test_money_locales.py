"""Amounts in every patient language and market: the currency's own digits, the locale's own
grouping and symbol place, and the currency never dropped."""

from __future__ import annotations

import re

import pytest

from portal import i18n
from portal.money import format_money, format_money_code

NBSP, RLM = "\u00a0", "\u200f"


@pytest.mark.parametrize("locale, minor, currency, expected", [
    # India: lakh grouping where CLDR's currency pattern has it
    ("en_IN", 12345678, "INR", "₹1,23,456.78"),
    ("hi_IN", 12345678, "INR", "₹1,23,456.78"),
    ("bn_IN", 12345678, "INR", "₹1,23,456.78"),
    ("te_IN", 12345678, "INR", "₹1,23,456.78"),
    ("ta_IN", 12345678, "INR", f"₹{NBSP}123,456.78"),  # CLDR: no lakhs in ta currency format
    ("mr_IN", 12345678, "INR", "₹123,456.78"),  # nor in mr's
    # The Gulf: no lakhs; three decimals for BHD/KWD/OMR/JOD in every language
    ("en_AE", 12345678, "AED", f"AED{NBSP}123,456.78"),
    ("en_AE", 1500, "BHD", f"BHD{NBSP}1.500"),
    ("ar_BH", 1500, "BHD", f"{RLM}1.500{NBSP}د.ب.{RLM}"),
    ("ar_AE", 1500, "BHD", f"{RLM}1.500{NBSP}د.ب.{RLM}"),
    ("ar", 1500, "KWD", f"{RLM}1.500{NBSP}د.ك.{RLM}"),
    ("ar_OM", 1234567, "OMR", f"{RLM}1,234.567{NBSP}ر.ع.{RLM}"),
    ("hi_IN", 1500, "BHD", f"BHD{NBSP}1.500"),
    ("zh_Hant_HK", 1500, "JOD", f"JOD{NBSP}1.500"),
    ("es_US", 1500, "KWD", f"KWD{NBSP}1.500"),
    ("es", 1500, "BHD", f"1,500{NBSP}BHD"),  # es: comma decimals, code after
    # Hong Kong, the Philippines, the US, Japan
    ("zh_Hant_HK", 123450, "HKD", "HK$1,234.50"),
    ("en_HK", 123450, "HKD", "HK$1,234.50"),
    ("fil_PH", 123450, "PHP", "₱1,234.50"),
    ("en_US", 123450, "USD", "$1,234.50"),
    ("es_US", 123450, "USD", "$1,234.50"),
    ("en_US", 1000, "JPY", "¥1,000"),
    ("ar", 1000, "JPY", f"{RLM}1,000{NBSP}JP¥"),
    ("hi_IN", 1000, "JPY", "JP¥1,000"),
])
def test_format_money(locale, minor, currency, expected):
    assert format_money(minor, currency, locale) == expected


@pytest.mark.parametrize("code", list(i18n.LANGUAGES))
@pytest.mark.parametrize("lab_locale", ["en_IN", "en_AE", "en_HK", "en_PH", "en_US", "ar_BH"])
@pytest.mark.parametrize("minor, currency, digits", [
    (1500, "BHD", "1.500"), (1500, "KWD", "1.500"), (1500, "OMR", "1.500"),
    (1500, "JOD", "1.500"), (1000, "JPY", "1,000"), (123450, "INR", "1,234.50"),
    (123450, "USD", "1,234.50"), (5, "USD", "0.05")])
def test_every_language_keeps_the_currency_and_its_digits(code, lab_locale, minor, currency,
                                                          digits):
    locale = i18n.format_locale(code, lab_locale)
    text = format_money(minor, currency, locale)
    number = re.search(r"\d[\d.,]*\d|\d", text).group()
    if locale.startswith("es") and not locale.startswith("es_US"):
        digits = digits.translate(str.maketrans(",.", ".,"))  # Spain: 1.234,50
    assert number == digits, (locale, text)
    assert text != number and re.search(r"[^\d.,\s\u200f]", text), f"currency lost: {text!r}"
    assert re.fullmatch(r"[\d.,\s\u00a0\u200f\u202fA-Za-z$¥₹₱€£\u0600-\u06ff]+", text), text


@pytest.mark.parametrize("locale, expected", [
    ("en_IN", "INR 1,23,456.78"), ("ar", "\u200f123,456.78 INR"), ("es", "123.456,78 INR"),
    ("ta_IN", "INR 123,456.78")])
def test_sms_amounts_use_the_code_placed_as_the_locale_places_its_symbol(locale, expected):
    assert format_money_code(12345678, "INR", locale) == expected
    assert format_money_code(1500, "BHD", locale).count("1") == 1  # 1.500, never 1.5


@pytest.mark.parametrize("code, lab_locale, expected", [
    ("hi", "en_IN", "hi_IN"), ("ta", "en_IN", "ta_IN"), ("ar", "en_AE", "ar_AE"),
    ("ar", "en_IN", "ar"), ("zh-Hant", "en_HK", "zh_Hant_HK"), ("zh-Hant", "en_IN", "zh_Hant"),
    ("fil", "en_PH", "fil_PH"), ("es", "en_US", "es_US"), ("en", "en_AE", "en_AE"),
    ("en", "not a locale", "en"), ("bn", None, "bn")])
def test_the_page_language_meets_the_labs_country(code, lab_locale, expected):
    assert i18n.format_locale(code, lab_locale) == expected


@pytest.mark.parametrize("header, expected", [
    ("hi-IN,hi;q=0.9,en;q=0.8", "hi"), ("zh-TW", "zh-Hant"), ("zh-Hant-HK", "zh-Hant"),
    ("zh-CN,en;q=0.1", "en"), ("es-419", "es"), ("fil-PH", "fil"), ("tl", "fil"),
    ("ar-BH", "ar"), ("fr", None), ("hi;q=0", None)])
def test_accept_language_matching(header, expected):
    from werkzeug.datastructures import LanguageAccept
    from werkzeug.http import parse_accept_header

    assert i18n.from_accept_language(parse_accept_header(header, LanguageAccept)) == expected
