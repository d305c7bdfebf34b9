"""What the staff searches share: LIKE patterns that take the text literally, and a mobile
number found by its shape (whole, in E.164 with the lab's country; or a part of it)."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from ..phones import to_e164

LIKE_SPECIALS = re.compile(r"([\\%_])")
PHONE_LIKE = re.compile(r"[\d\s+()./-]+")


def escaped(text: str) -> str:
    """`text` for a LIKE pattern, its wildcards taken literally (with escape="\\")."""
    return LIKE_SPECIALS.sub(r"\\\1", text)


def looks_like_phone(text: str) -> bool:
    return PHONE_LIKE.fullmatch(text) is not None


def phone_matches(column: InstrumentedAttribute[str | None], text: str,
                  country: str | None) -> list[ColumnElement[bool]]:
    """A whole number equals the column (its index); four digits or more are looked for inside."""
    phone = to_e164(text, country)
    if phone:
        return [column == phone]
    digits = re.sub(r"\D", "", text).lstrip("0")
    return [column.like(f"%{digits}%")] if len(digits) >= 4 else []
