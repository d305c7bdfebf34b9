"""Delivery of outgoing messages: SMTP email and the SMS backends. Knows nothing of the database."""

from __future__ import annotations


class DeliveryError(Exception):
    """Sending failed; the worker tries again later."""


class PermanentError(DeliveryError):
    """Sending cannot succeed by trying again (bad recipient, missing settings)."""
