"""Random tokens and references, and the patient's address built from a link's token."""

from __future__ import annotations

import re
import secrets


def new_token() -> str:
    """256 random bits, URL-safe: the patient's capability to see and pay one link."""
    return secrets.token_urlsafe(32)


def patient_url(base_url: str, token: str) -> str:
    return f"{base_url}/pay/{token}"


def new_reference(prefix: str = "pay") -> str:
    """Our reference for one gateway exchange: unique, opaque, safe in every gateway's fields."""
    return f"{prefix}_{secrets.token_hex(12)}"


PAY_PAGE = re.compile(r"^/pay/([A-Za-z0-9_-]{16,64})(?:/|$)")


def pay_page_of(path: str) -> str | None:
    """`/pay/<token>` for any path under a link's pages: the patient's way back."""
    match = PAY_PAGE.match(path or "")
    return f"/pay/{match.group(1)}" if match else None
