"""ISO 4217 minor units, and the one conversion between minor units and a gateway's decimals.

A leaf module: the portal's money.py reads the same table, so a bill and its gateway never
disagree on how many decimals a currency has.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# ISO 4217 (list one, current codes): the exponent of every code whose minor unit is not 2.
_NOT_TWO = {
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "CLF": 4, "UYW": 4,
}
_TWO = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD
    KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD
    NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
    SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS
    VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL
""".split()
ISO_EXPONENTS: dict[str, int] = {**dict.fromkeys(_TWO, 2), **_NOT_TWO}

_DECIMAL_TEXT = re.compile(r"\d+(\.\d+)?")


class AmountError(ValueError):
    """An amount that is no exact, non-negative quantity of its currency."""


def exponent(currency: str) -> int:
    """The ISO 4217 minor unit of `currency`; KeyError for a code the table does not have."""
    return ISO_EXPONENTS[currency.upper()]


def to_major(minor: int, currency: str) -> str:
    """123450 INR -> '1234.50', 12345 KWD -> '12.345', 1500 JPY -> '1500'."""
    places = exponent(currency)
    return f"{Decimal(minor).scaleb(-places):.{places}f}"


def to_minor(value: str | int | Decimal, currency: str) -> int:
    """A gateway's amount ('12.345', 100 or an exact Decimal) in minor units, never rounded.

    Text must be plain decimal digits; a float is refused (it cannot carry 12.345 exactly).
    AmountError for anything else, KeyError for a currency the table does not have.
    """
    places = exponent(currency)
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise AmountError(f"amount {value!r} is not decimal digits")
        number = Decimal(text)
    elif isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool)):
        try:
            number = Decimal(value)
        except InvalidOperation:  # pragma: no cover - Decimal(int) always works
            raise AmountError(f"amount {value!r} is not a number") from None
    else:
        raise AmountError(f"amount {value!r} is not a number")
    if not number.is_finite() or number < 0:
        raise AmountError(f"amount {value!r} is not a payable number")
    minor = number.scaleb(places)
    if minor != minor.to_integral_value():
        raise AmountError(f"{value} {currency} is not a whole number of minor units")
    return int(minor)
