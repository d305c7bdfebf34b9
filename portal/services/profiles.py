"""Saved payment methods: stored by reference after the patient's consent, charged off-session."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways.base import Capability, GatewayError, SavedMethod, SavedMethodCharge

from ..models import (
    OPEN_LINK_STATES,
    CustomerPaymentProfile,
    ExchangeKind,
    OnlinePayment,
    Payment,
    PaymentStatus,
    utcnow,
)
from ..tokens import new_reference
from .audit import audit
from .events import Applied, fail_payment, lock_link
from .exchanges import GatewayCall
from .keys import configured_gateway

log = logging.getLogger(__name__)


class ProfileError(Exception):
    """Shown to staff as is."""


def active_profiles(session: Session, lab_id: int, customer_id: int | None,
                    gateway: str | None = None) -> list[CustomerPaymentProfile]:
    if customer_id is None:
        return []
    query = select(CustomerPaymentProfile).where(
        CustomerPaymentProfile.lab_id == lab_id, CustomerPaymentProfile.customer_id == customer_id,
        CustomerPaymentProfile.deleted_at.is_(None))
    if gateway is not None:
        query = query.where(CustomerPaymentProfile.gateway == gateway)
    return list(session.scalars(query.order_by(CustomerPaymentProfile.id)))


def save_method_from_payment(session: Session, config: Mapping[str, Any], payment_id: int,
                             transaction_id: str | None) -> CustomerPaymentProfile | None:
    """Stores the method a consenting patient used, once, under the link's customer."""
    payment = session.get_one(Payment, payment_id)
    link = payment.online_payment
    if not payment.save_method_consent or link.customer_id is None:
        return None
    transaction_id = transaction_id or payment.gateway_transaction_id
    if not transaction_id:
        raise ProfileError("the payment has no gateway transaction id yet")
    gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    session.commit()  # no transaction stays open across the gateway call
    method = gateway.saved_method_from_payment(transaction_id)
    if method is None:
        log.info("no saved method came with payment %s", payment.reference)
        return None
    existing = session.scalar(select(CustomerPaymentProfile).where(
        CustomerPaymentProfile.lab_id == payment.lab_id,
        CustomerPaymentProfile.gateway == payment.gateway,
        CustomerPaymentProfile.token == method.token,
        CustomerPaymentProfile.deleted_at.is_(None)))
    if existing is not None:
        return existing
    profile = CustomerPaymentProfile(
        lab_id=payment.lab_id, customer_id=link.customer_id, gateway=payment.gateway,
        gateway_customer_id=method.gateway_customer_id, token=method.token,
        brand=method.brand, last4=method.last4, exp_month=method.exp_month,
        exp_year=method.exp_year)
    session.add(profile)
    audit(session, lab_id=payment.lab_id, user_id=None, action="payment_profile.save",
          object_type="customer", object_id=link.customer_id, gateway=payment.gateway,
          last4=method.last4)
    session.commit()
    return profile


def _method(profile: CustomerPaymentProfile) -> SavedMethod:
    return SavedMethod(gateway_customer_id=profile.gateway_customer_id or "",
                       token=profile.token, brand=profile.brand, last4=profile.last4,
                       exp_month=profile.exp_month, exp_year=profile.exp_year)


def charge_profile(session: Session, config: Mapping[str, Any], link: OnlinePayment,
                   profile: CustomerPaymentProfile, *, user_id: int | None,
                   ip: str | None = None) -> tuple[Payment, Applied]:
    """Charges what the link still owes to the patient's saved method, off-session."""
    if profile.deleted_at is not None or profile.customer_id != link.customer_id \
            or profile.lab_id != link.lab_id:
        raise ProfileError("This saved method does not belong to the link's patient.")
    try:
        gateway = configured_gateway(session, config, link.lab_id, profile.gateway)
    except GatewayError as exc:  # e.g. the lab's keys for that gateway were removed
        raise ProfileError(exc.message) from None
    if Capability.SAVED_METHODS not in type(gateway).capabilities:
        raise ProfileError("This gateway cannot charge saved methods.")
    # The link's row lock is held from this check until the pending payment is committed,
    # so a double-click or a second desk charges the card once.
    link = lock_link(session, link.id)
    if link.effective_status() not in OPEN_LINK_STATES:
        raise ProfileError("This link can no longer be paid.")
    if session.scalar(select(Payment.id).where(
            Payment.online_payment_id == link.id, Payment.method == "saved_card",
            Payment.status == PaymentStatus.PENDING).limit(1)) is not None:
        raise ProfileError("A charge to a saved method is already in progress for this link. "
                           "Wait for the gateway's answer.")
    payment = Payment(lab_id=link.lab_id, online_payment=link, reference=new_reference(),
                      amount=link.outstanding, currency=link.currency, gateway=profile.gateway,
                      status=PaymentStatus.PENDING, method="saved_card",
                      card_brand=profile.brand, card_last4=profile.last4)
    session.add(payment)
    audit(session, lab_id=link.lab_id, user_id=user_id, action="payment_profile.charge",
          object_type="online_payment", object_id=link.id, ip=ip, profile_id=profile.id,
          amount=payment.amount)
    session.flush()
    charge = SavedMethodCharge(reference=payment.reference, amount=payment.amount,
                               currency=payment.currency,
                               description=f"{link.lab.name}: bill {link.bill_reference}",
                               method=_method(profile),
                               idempotency_key=f"charge-{payment.reference}")
    call = GatewayCall(session, gateway, payment, ExchangeKind.CHARGE_REQUESTED,
                       event_type="saved_method.charge")

    def not_accepted(payment: Payment, exc: GatewayError) -> None:
        if not exc.retryable:  # a timeout may still have charged: the webhook or a poll decides
            fail_payment(payment, call.mask(exc.message))

    try:
        event = call.send(lambda: gateway.charge_saved_method(charge),
                          failed="charge not accepted", on_failure=not_accepted)
    except GatewayError as exc:
        raise ProfileError(call.mask(exc.message)) from None
    _link, payment = call.lock()
    payment.gateway_transaction_id = event.transaction_id
    applied = call.apply(event)
    return session.get_one(Payment, payment.id), applied


def delete_profile(session: Session, config: Mapping[str, Any], profile: CustomerPaymentProfile, *,
                   user_id: int | None, ip: str | None = None) -> None:
    """Removes the method at the gateway first, then here."""
    if profile.deleted_at is not None:
        return
    gateway = configured_gateway(session, config, profile.lab_id, profile.gateway)
    session.commit()
    try:
        gateway.delete_saved_method(_method(profile))
    except GatewayError as exc:
        raise ProfileError(exc.message) from None
    profile.deleted_at = utcnow()
    audit(session, lab_id=profile.lab_id, user_id=user_id, action="payment_profile.delete",
          object_type="customer", object_id=profile.customer_id, ip=ip, profile_id=profile.id)
    session.commit()
