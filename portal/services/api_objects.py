"""Links, payments and refunds as the JSON API shows them, and as outgoing webhooks carry them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import OnlinePayment, Payment, Refund
from ..tokens import patient_url


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def link_object(link: OnlinePayment, base_url: str) -> dict[str, Any]:
    url = patient_url(base_url, link.token)
    return {"id": link.id, "url": url, "qr_url": f"{url}/qr.svg",
            "status": link.effective_status().value, "amount": link.amount,
            "currency": link.currency, "amount_paid": link.amount_paid,
            "bill_reference": link.bill_reference, "allow_partial": link.allow_partial,
            "gateway": link.gateway, "language": link.language,
            "metadata": link.metadata_json or {},
            "expires_at": iso(link.expires_at), "created_at": iso(link.created_at)}


def refund_object(refund: Refund) -> dict[str, Any]:
    return {"id": refund.id, "payment_id": refund.payment_id, "amount": refund.amount,
            "currency": refund.payment.currency, "status": refund.status.value,
            "reason": refund.reason, "created_at": iso(refund.created_at)}


def payment_object(payment: Payment) -> dict[str, Any]:
    return {"id": payment.id, "reference": payment.reference, "amount": payment.amount,
            "currency": payment.currency, "status": payment.status.value,
            "gateway": payment.gateway, "method": payment.method,
            "gateway_transaction_id": payment.gateway_transaction_id,
            "amount_refunded": payment.amount_refunded,
            "created_at": iso(payment.created_at), "succeeded_at": iso(payment.succeeded_at),
            "refunds": [refund_object(r) for r in payment.refunds]}


def status_object(link: OnlinePayment, base_url: str) -> dict[str, Any]:
    """What `GET /payments/status/<id>` answers."""
    return {**link_object(link, base_url), "payments": [payment_object(p) for p in link.payments]}
