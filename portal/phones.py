"""Phone numbers in one form: E.164, read in the lab's country when given without a prefix."""

from __future__ import annotations

import phonenumbers


def to_e164(text: str, country: str | None) -> str | None:
    """`+919876543210` for any valid way of writing it; None when it is not a valid number."""
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def display(e164: str) -> str:
    """`+91 80 4567 8900`: how a stored number is written for people to read and dial."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
