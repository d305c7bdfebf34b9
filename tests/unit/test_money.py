import pytest

from portal.money import MoneyError, exponent, format_money, major_string, parse_amount


@pytest.mark.parametrize("text,currency,minor", [
    ("1,234.50", "INR", 123450),
    ("1234.5", "INR", 123450),
    ("0.01", "INR", 1),
    ("1,00,000", "INR", 10000000),
    ("5000", "JPY", 5000),
    ("1.125", "BHD", 1125),
    ("12.3", "KWD", 12300),
    (" 99.99 ", "usd", 9999),
])
def test_parse_amount(text, currency, minor):
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize("text,currency,message", [
    ("1.234", "INR", "INR amounts have at most 2 decimals."),
    ("10.5", "JPY", "JPY amounts have no decimals."),
    ("1.0005", "BHD", "BHD amounts have at most 3 decimals."),
    ("0", "INR", "The amount must be more than zero."),
    ("-5", "INR", "The amount must be more than zero."),
    ("", "INR", "Enter an amount."),
    ("abc", "INR", "Enter the amount as a number, for example 1250.50."),
    ("1e3", "INR", "Enter the amount as a number, for example 1250.50."),
    ("NaN", "INR", "Enter the amount as a number, for example 1250.50."),
    ("99999999999", "INR", "The amount is too large."),
])
def test_parse_amount_refuses(text, currency, message):
    with pytest.raises(MoneyError, match=message.replace(".", r"\.")):
        parse_amount(text, currency)


def test_exponents_follow_iso_4217():
    assert [exponent(c) for c in ("INR", "JPY", "BHD", "KWD", "OMR", "USD", "ISK")] == \
        [2, 0, 3, 3, 3, 2, 0]


def test_unknown_code_is_refused():
    with pytest.raises(MoneyError):
        exponent("RUPEES")


@pytest.mark.parametrize("minor,currency,locale,text", [
    (123450, "INR", "en_IN", "₹1,234.50"),
    (10000000, "INR", "en_IN", "₹1,00,000.00"),
    (123450, "USD", "en_US", "$1,234.50"),
    (5000, "JPY", "en_US", "¥5,000"),
    (1500, "BHD", "en_US", "BHD 1.500"),
    (1, "KWD", "en_US", "KWD 0.001"),
])
def test_format_money(minor, currency, locale, text):
    assert format_money(minor, currency, locale).replace("\xa0", " ") == text


@pytest.mark.parametrize("minor,currency,text", [
    (123450, "INR", "1234.50"), (5000, "JPY", "5000"), (1500, "BHD", "1.500"),
])
def test_major_string_keeps_exact_exponent(minor, currency, text):
    assert major_string(minor, currency) == text
