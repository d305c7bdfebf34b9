"""Money as integer minor units plus an ISO 4217 code; Decimal only while parsing or showing."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache

from babel.numbers import format_currency

# One exponent table for bills and gateways: ISO 4217 where CLDR disagrees, else Babel's.
from gateways.currency import ISO_EXPONENTS as ISO_EXPONENTS  # noqa: F401  public name
from gateways.currency import CurrencyError
from gateways.currency import exponent as currency_exponent

# Offered in forms; any ISO code with a known exponent is accepted through the API.
COMMON_CURRENCIES = ("INR", "USD", "EUR", "GBP", "AED", "SAR", "QAR", "BHD", "KWD", "OMR",
                     "JOD", "EGP", "PHP", "SGD", "HKD", "MYR", "THB", "IDR", "JPY", "AUD",
                     "CAD", "NZD", "ZAR", "KES", "NGN", "LKR", "NPR", "BDT", "PKR")

CODE_BEFORE_DIGIT = re.compile(r"^([A-Z]{3})(\d)")
AMOUNT_PATTERN = re.compile(r"\d+(\.\d+)?|\.\d+")
MAX_MINOR = 10**12  # a sanity cap on one link: 10 billion of a two-decimal currency


class MoneyError(ValueError):
    """Text that is not a valid amount for its currency; the message is shown to the user.

    `code` says why, for pages that word it in another language: empty, not_a_number,
    not_positive, decimals, too_large or currency.
    """

    def __init__(self, message: str, code: str = "not_a_number"):
        super().__init__(message)
        self.code = code


def exponent(currency: str) -> int:
    try:
        return currency_exponent(currency)
    except CurrencyError as exc:
        raise MoneyError(str(exc), "currency") from None


# ISO 4217 codes that are not money a patient can pay: precious metals (XAU, XAG, XPT, XPD),
# the SDR and bond-market units (XDR, XBA-XBD), the SUCRE and ADB unit (XSU, XUA), the code
# for testing (XTS) and "no currency" (XXX). CLDR names them, so Babel alone would accept them.
NOT_MONEY = frozenset({"XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU",
                       "XUA", "XTS", "XXX"})


def is_known_currency(currency: str) -> bool:
    """An ISO 4217 code of money: known to CLDR, and not a metal, a unit or a test code."""
    from babel.numbers import get_currency_name

    code = (currency or "").upper()
    return (len(code) == 3 and code.isalpha() and code not in NOT_MONEY
            and get_currency_name(code, locale="en") != code)


def parse_amount(text: str, currency: str) -> int:
    """`"1,234.50"` in INR -> 123450. Refuses more decimals than the currency has."""
    cleaned = (text or "").strip().replace(",", "").replace(" ", "").replace("\u00a0", "")
    if not cleaned:
        raise MoneyError("Enter an amount.", "empty")
    if cleaned.startswith("-"):
        raise MoneyError("The amount must be more than zero.", "not_positive")
    if not AMOUNT_PATTERN.fullmatch(cleaned):
        raise MoneyError("Enter the amount as a number, for example 1250.50.")
    value = Decimal(cleaned)
    if value <= 0:
        raise MoneyError("The amount must be more than zero.", "not_positive")
    places = exponent(currency)
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        if places == 0:
            raise MoneyError(f"{currency.upper()} amounts have no decimals.", "decimals")
        raise MoneyError(f"{currency.upper()} amounts have at most {places} decimals.",
                         "decimals")
    minor_int = int(minor)
    if minor_int > MAX_MINOR:
        raise MoneyError("The amount is too large.", "too_large")
    return minor_int


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int, currency: str, locale: str = "en_IN") -> str:
    """123450 INR -> '₹1,234.50'; 1000 JPY -> '¥1,000'; 1500 BHD -> 'BHD 1.500'; in ar,
    1500 BHD -> '1.500 د.ب.' between right-to-left marks: the locale's own pattern, always the
    currency's ISO digits."""
    if type(minor) is int and minor >= 0:
        fast = _compiled_format(currency, locale)
        if fast is not None:
            return fast(minor)
    return _babel_format(minor, currency, locale)


def _babel_format(minor: int, currency: str, locale: str) -> str:
    places = exponent(currency)
    text = format_currency(Decimal(minor).scaleb(-places), currency.upper(),
                           locale=_locale(locale), format=_standard_pattern(locale, places),
                           currency_digits=False, decimal_quantization=True,
                           numbering_system="latn")
    # CLDR spaces a letter code from its digits ("BHD 1.500"); Babel leaves them joined.
    return CODE_BEFORE_DIGIT.sub("\\1\u00a0\\2", text)


QUOTED = re.compile(r"'([^']*)'")
# Amounts a compiled format must write exactly as Babel does before it is trusted.
PROBES = (0, 1, 9, 10, 99, 100, 999, 1000, 12345, 123456, 1234567, 12345678, 123456789,
          1234567890, 98765432101, 100000000000000, 123456789012345678)


@lru_cache(maxsize=1024)
def _compiled_format(currency: str, locale: str) -> Callable[[int], str] | None:
    """`format_money` for amounts >= 0 as plain string work on the locale's parsed pattern:
    affixes, grouping and separators looked up once, not per amount (Babel's Decimal path
    costs ~15 µs an amount, and a list page shows dozens). None, and Babel's path, for a
    pattern with more than that in it, or where any probe amount comes out differently."""
    places = exponent(currency)
    pattern = _standard_pattern(locale, places)
    affixes = pattern.prefix[0] + pattern.suffix[0]
    if pattern.exp_prec or pattern.scale or "@" in pattern.pattern or "¤¤¤" in affixes \
            or pattern.int_prec[0] < 1:
        return None
    from babel.numbers import get_decimal_symbol, get_group_symbol

    loc = _locale(locale)
    code = currency.upper()
    symbol = loc.currency_symbols.get(code, code)

    def affix(text: str) -> str:
        text = text.replace("¤¤", code).replace("¤", symbol)
        return QUOTED.sub(lambda m: m.group(1) or "'", text)

    # The number starts with a digit: a code ending the prefix is spaced from it once, here.
    prefix = CODE_BEFORE_DIGIT.sub("\\1\u00a0\\2", affix(pattern.prefix[0]) + "0")[:-1]
    suffix = affix(pattern.suffix[0])
    group = get_group_symbol(loc, numbering_system="latn")
    point = get_decimal_symbol(loc, numbering_system="latn")
    first, rest = pattern.grouping
    least = pattern.int_prec[0]
    scale = 10**places

    def compiled(minor: int) -> str:
        whole, fraction = divmod(minor, scale)
        digits = str(whole).rjust(least, "0")
        if len(digits) > first:  # as Babel groups: the last `first` digits, then by `rest`
            groups = [digits[-first:]]
            digits = digits[:-first]
            while len(digits) > rest:
                groups.append(digits[-rest:])
                digits = digits[:-rest]
            groups.append(digits)
            digits = group.join(reversed(groups))
        if places:
            return f"{prefix}{digits}{point}{fraction:0{places}d}{suffix}"
        return f"{prefix}{digits}{suffix}"

    if any(compiled(n) != _babel_format(n, currency, locale) for n in PROBES):
        return None
    return compiled


@lru_cache(maxsize=256)
def _locale(locale: str):
    from babel import Locale

    return Locale.parse(locale)


@lru_cache(maxsize=1024)
def _standard_pattern(locale: str, places: int):
    """The locale's currency pattern with `places` decimals, parsed and copied once."""
    return _with_digits(_locale(locale).currency_formats["standard"], places)


def _with_digits(pattern, places: int):
    """The same pattern (prefix, grouping, where the symbol goes) with exactly `places` decimals.

    Cutting the pattern text at its '.' once dropped a symbol placed after the digits (ar, es):
    copying the parsed pattern keeps every part of it.
    """
    from copy import copy

    fixed = copy(pattern)
    fixed.frac_prec = (places, places)
    return fixed


def major_string(minor: int, currency: str) -> str:
    """Major units with the currency's exact exponent, for gateways that want text: '1234.50'."""
    places = exponent(currency)
    return f"{to_decimal(minor, currency):.{places}f}"


def format_money_code(minor: int, currency: str, locale: str = "en_IN") -> str:
    """'INR 1,234.50': the code, not a symbol, for SMS (one '₹' makes a whole SMS UCS-2);
    grouped and placed as the locale places its symbol."""
    pattern = _with_digits(_locale(locale).currency_formats["standard"], exponent(currency))
    pattern.prefix = tuple(_iso_code_sign(p) for p in pattern.prefix)
    pattern.suffix = tuple(_iso_code_sign(s) for s in pattern.suffix)
    text = format_currency(to_decimal(minor, currency), currency.upper(), locale=locale,
                           format=pattern, currency_digits=False, decimal_quantization=True,
                           numbering_system="latn")
    return CODE_BEFORE_DIGIT.sub("\\1 \\2", text.replace("\u00a0", " "))


def _iso_code_sign(affix: str) -> str:
    """'¤' (the symbol) -> '¤¤' (the ISO code) in a pattern's prefix or suffix."""
    return affix if "¤¤" in affix else affix.replace("¤", "¤¤")
