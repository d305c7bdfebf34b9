"""A link's receipt as plain data: who paid whom, every payment and refund, the totals.

The one place a receipt is assembled: the patient's page, its PDF and the staff pages read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..models import (
    OPEN_LINK_STATES,
    SETTLED_PAYMENT_STATES,
    Lab,
    OnlinePayment,
    RefundStatus,
    utcnow,
)
from ..phones import display


@dataclass(frozen=True)
class LabContact:
    name: str
    address_lines: tuple[str, ...]
    phone: str | None  # E.164, for tel: links
    email: str | None

    @property
    def phone_display(self) -> str | None:
        return display(self.phone) if self.phone else None

    @classmethod
    def of(cls, lab: Lab) -> LabContact:
        lines = tuple(line for line in (lab.address or "").splitlines() if line.strip())
        return cls(name=lab.name, address_lines=lines, phone=lab.phone, email=lab.email)


@dataclass(frozen=True)
class ReceiptEntry:
    """One payment (positive) or refund (negative `signed_amount`), in time order."""

    kind: str  # "payment" | "refund"
    at: datetime
    amount: int
    currency: str
    reference: str  # the gateway's id when it gave one, else ours
    gateway: str
    method: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None

    @property
    def signed_amount(self) -> int:
        return -self.amount if self.kind == "refund" else self.amount


@dataclass(frozen=True)
class Receipt:
    lab: LabContact
    patient_name: str | None
    bill_reference: str
    description: str
    bill_amount: int
    currency: str
    entries: tuple[ReceiptEntry, ...]
    outstanding: int
    issued_at: datetime

    @property
    def payments(self) -> tuple[ReceiptEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "payment")

    @property
    def refunds(self) -> tuple[ReceiptEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "refund")

    @property
    def total_paid(self) -> int:
        return sum(e.amount for e in self.payments)

    @property
    def total_refunded(self) -> int:
        return sum(e.amount for e in self.refunds)

    @property
    def net_paid(self) -> int:
        return self.total_paid - self.total_refunded


def build_receipt(link: OnlinePayment, *, now: datetime | None = None) -> Receipt | None:
    """The link's receipt, or None while nothing has been paid on it."""
    entries: list[ReceiptEntry] = []
    for payment in link.payments:
        if payment.status not in SETTLED_PAYMENT_STATES:
            continue
        entries.append(ReceiptEntry(
            kind="payment", at=payment.succeeded_at or payment.created_at,
            amount=payment.amount, currency=payment.currency,
            reference=payment.gateway_transaction_id or payment.reference,
            gateway=payment.gateway, method=payment.method, card_brand=payment.card_brand,
            card_last4=payment.card_last4))
        for refund in payment.refunds:
            if refund.status == RefundStatus.SUCCEEDED:
                # updated_at: the refund's last move, which for a succeeded one is its success.
                entries.append(ReceiptEntry(
                    kind="refund", at=refund.updated_at, amount=refund.amount,
                    currency=payment.currency,
                    reference=refund.gateway_refund_id or refund.reference,
                    gateway=payment.gateway))
    if not entries:
        return None
    entries.sort(key=lambda e: e.at)
    # The name the link was made with where links keep one (issue 13, item 1), else the
    # patient record's.
    customer = link.customer
    name = getattr(link, "patient_name", None) or (customer.name if customer else None)
    still_open = link.effective_status(now) in OPEN_LINK_STATES
    return Receipt(
        lab=LabContact.of(link.lab), patient_name=name,
        bill_reference=link.bill_reference, description=link.description or "",
        bill_amount=link.amount, currency=link.currency, entries=tuple(entries),
        outstanding=link.outstanding if still_open else 0, issued_at=now or utcnow())
