"""Currency exponents, and the one conversion between minor units and a gateway's decimals.

A leaf module shared with the portal's money.py: a bill is stored in the minor units this
module names, and the gateways convert it with the same table, so the two never disagree.
"""

from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import get_currency_precision

# Babel's table follows CLDR, which rounds some currencies for cash (e.g. ISK, HUF, TWD) and
# disagrees with ISO 4217 on a few; gateways take ISO exponents, so ISO wins where they differ.
ISO_EXPONENTS = {
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "HUF": 2, "TWD": 2, "IDR": 2, "INR": 2, "PHP": 2, "AED": 2, "SAR": 2, "EGP": 2,
}

_DECIMAL_TEXT = re.compile(r"\d+(\.\d+)?")


class CurrencyError(ValueError):
    """Not an ISO 4217 currency code."""


class AmountError(ValueError):
    """An amount that is no exact, non-negative quantity of its currency."""


def exponent(currency: str) -> int:
    """How many decimals `currency` has: ISO 4217's, CLDR's where the table is silent."""
    code = currency.upper()
    if code in ISO_EXPONENTS:
        return ISO_EXPONENTS[code]
    if len(code) != 3 or not code.isalpha():
        raise CurrencyError(f"{currency!r} is not an ISO 4217 currency code")
    return get_currency_precision(code)


def to_major(minor: int, currency: str) -> str:
    """123450 INR -> '1234.50', 12345 KWD -> '12.345', 1500 JPY -> '1500'."""
    places = exponent(currency)
    return f"{Decimal(minor).scaleb(-places):.{places}f}"


def to_minor(value: str | int | Decimal, currency: str) -> int:
    """A gateway's amount ('12.345', 100 or an exact Decimal) in minor units, never rounded.

    Text must be plain decimal digits; a float is refused (it cannot carry 12.345 exactly).
    AmountError for anything else, CurrencyError for what is no currency code.
    """
    places = exponent(currency)
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise AmountError(f"amount {value!r} is not decimal digits")
        number = Decimal(text)
    elif isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        number = Decimal(value)
    else:
        raise AmountError(f"amount {value!r} is not a number")
    if not number.is_finite() or number < 0:
        raise AmountError(f"amount {value!r} is not a payable number")
    minor = number.scaleb(places)
    if minor != minor.to_integral_value():
        raise AmountError(f"{value} {currency} is not a whole number of minor units")
    return int(minor)
