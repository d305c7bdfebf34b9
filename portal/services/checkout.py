"""Starting a checkout for a link, and the patient's return from the gateway."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateways import GATEWAYS
from gateways.base import Capability, Checkout, CheckoutRequest, GatewayError, SignatureError

from ..models import (
    OPEN_LINK_STATES,
    CustomerPaymentProfile,
    ExchangeKind,
    LinkStatus,
    OnlinePayment,
    Payment,
    PaymentStatus,
    utcnow,
)
from ..tokens import new_reference, patient_url
from ..worker.queue import enqueue
from .events import Applied, fail_payment, lock_link
from .exchanges import GatewayCall
from .keys import configured_gateway

log = logging.getLogger(__name__)

REUSE_CHECKOUT_FOR = timedelta(minutes=20)
CHECKOUT_IN_FLIGHT_WAIT = timedelta(seconds=15)


def first_check_after(gateway: str) -> timedelta:
    """The gateway's first status check, counted from the checkout (PhonePe asks for 20-25 s)."""
    cls = GATEWAYS.get(gateway)
    return timedelta(seconds=cls.status_check_delays[0] if cls else 20)


class NotPayable(Exception):
    def __init__(self, status: LinkStatus):
        super().__init__(status)
        self.status = status


class AmountRefused(Exception):
    """The patient asked to pay an amount this link does not take; `limit` is in minor units."""

    def __init__(self, code: str, limit: int):
        super().__init__(code)
        self.code = code  # "below_minimum" | "above_outstanding" | "no_part_payments"
        self.limit = limit


def smallest_payment(link: OnlinePayment) -> int:
    """The least the patient may pay now: the lab's minimum, or all that is left if less."""
    minimum = link.lab.min_part_payment or 1
    return max(1, min(minimum, link.outstanding))


def amount_to_charge(link: OnlinePayment, amount: int | None) -> int:
    """What a checkout charges: all that is outstanding, or a part when the link allows it."""
    outstanding = link.outstanding
    if amount is None or amount == outstanding:
        return outstanding
    if amount > outstanding:
        raise AmountRefused("above_outstanding", outstanding)
    if not link.allow_partial:
        raise AmountRefused("no_part_payments", outstanding)
    if amount < smallest_payment(link):
        raise AmountRefused("below_minimum", smallest_payment(link))
    return amount


@dataclass(frozen=True)
class Started:
    payment: Payment
    checkout: Checkout


def urls(base_url: str, link: OnlinePayment, gateway: str, reference: str) -> dict[str, str]:
    return {
        "return_url": f"{patient_url(base_url, link.token)}/return?ref={reference}",
        "cancel_url": patient_url(base_url, link.token),
        "notify_url": f"{base_url}/payments/webhook/{gateway}",
    }


def start_checkout(session: Session, config: Mapping[str, Any], link: OnlinePayment, *,
                   save_method: bool = False, amount: int | None = None) -> Started:
    """Creates a pending Payment and the gateway's hosted checkout for what is outstanding,
    or for `amount` (minor units) when the link takes part payments (`amount_to_charge`).

    The link row is locked only while the Payment is created, never across the gateway call.
    A second press of Pay for the same amount within a few minutes reuses the checkout made.
    """
    deadline = utcnow() + CHECKOUT_IN_FLIGHT_WAIT
    while True:
        link = lock_link(session, link.id)
        status = link.effective_status()
        if status not in OPEN_LINK_STATES:
            raise NotPayable(status)
        charge = amount_to_charge(link, amount)  # checked under the lock: outstanding is fresh
        recent = session.scalars(
            select(Payment).where(Payment.online_payment_id == link.id,
                                  Payment.status == PaymentStatus.PENDING,
                                  Payment.amount == charge,
                                  Payment.created_at > utcnow() - REUSE_CHECKOUT_FOR)
            .order_by(Payment.id.desc()).limit(1)
            .execution_options(populate_existing=True)).first()
        if recent is not None and recent.checkout_url is not None:
            session.commit()
            return Started(recent, Checkout(checkout_id=recent.checkout_id or "",
                                            redirect_url=recent.checkout_url))
        # checkout_id is set once the gateway answered: a form checkout (PesoPay) has no URL
        # to reuse, and waiting for one would hold the patient's second press for 15 s.
        if (recent is not None and recent.checkout_id is None
                and recent.created_at > utcnow() - CHECKOUT_IN_FLIGHT_WAIT
                and utcnow() < deadline):
            session.commit()  # another request is creating this checkout: let it finish
            time.sleep(0.1)
            continue
        break

    gateway = configured_gateway(session, config, link.lab_id, link.gateway)
    payment = Payment(lab_id=link.lab_id, online_payment=link, reference=new_reference(),
                      amount=charge, currency=link.currency, gateway=link.gateway,
                      status=PaymentStatus.PENDING, save_method_consent=save_method)
    session.add(payment)
    session.flush()
    saved = saved_customer_id(session, link) if save_method else ""
    request = CheckoutRequest(
        reference=payment.reference, amount=payment.amount, currency=payment.currency,
        description=link.description or f"Bill {link.bill_reference}",
        bill_reference=link.bill_reference, merchant_name=link.lab.name,
        expires_at=link.expires_at, idempotency_key=f"checkout-{payment.reference}",
        customer_name=link.patient_name or "", customer_email=link.patient_email or "",
        customer_phone=link.patient_phone or "",
        save_method=save_method, gateway_customer_id=saved,
        **urls(config["PORTAL_BASE_URL"], link, link.gateway, payment.reference),
    )
    # The payment exists before the gateway hears of it.
    call = GatewayCall(session, gateway, payment, ExchangeKind.CHECKOUT_CREATED)
    checkout = call.send(lambda: gateway.create_checkout(request),
                         failed="checkout could not be created",
                         on_failure=lambda payment, exc: fail_payment(payment,
                                                                      call.mask(exc.message)))
    _link, payment = call.lock()
    payment.checkout_id = checkout.checkout_id
    payment.checkout_url = checkout.redirect_url
    if payment.status == PaymentStatus.PENDING:
        payment.next_check_at = utcnow() + first_check_after(payment.gateway)
    call.record(payment, event_type="checkout.created", outcome=f"checkout {checkout.checkout_id}",
                payload=dict(checkout.raw))
    session.commit()
    return Started(payment, checkout)


def saved_customer_id(session: Session, link: OnlinePayment) -> str:
    """The patient's customer id at the link's gateway, from a card saved before."""
    if link.customer_id is None:
        return ""
    return session.scalar(select(CustomerPaymentProfile.gateway_customer_id).where(
        CustomerPaymentProfile.customer_id == link.customer_id,
        CustomerPaymentProfile.lab_id == link.lab_id,
        CustomerPaymentProfile.gateway == link.gateway,
        CustomerPaymentProfile.deleted_at.is_(None),
        CustomerPaymentProfile.gateway_customer_id.is_not(None))
        .order_by(CustomerPaymentProfile.id.desc()).limit(1)) or ""


def payment_for_return(session: Session, link: OnlinePayment,
                       reference: str | None) -> Payment | None:
    query = select(Payment).where(Payment.online_payment_id == link.id)
    if reference:
        query = query.where(Payment.reference == reference)
    return session.scalars(query.order_by(Payment.id.desc()).limit(1)).first()


def handle_return(session: Session, config: Mapping[str, Any], link: OnlinePayment,
                  params: Mapping[str, str]) -> Payment | None:
    """The patient is back: trust a signed return, otherwise ask the worker to check status.

    The browser's word alone never moves a state; a gateway that does not sign its return
    is asked for the payment's status by the worker, alongside the webhook.
    """
    payment = payment_for_return(session, link, params.get("ref"))
    if payment is None or payment.status != PaymentStatus.PENDING:
        return payment
    try:
        gateway = configured_gateway(session, config, link.lab_id, payment.gateway)
    except GatewayError:
        return payment
    if Capability.SIGNED_RETURN in type(gateway).capabilities:
        # Only a verified return is recorded: a forged one is the browser's word alone.
        call = GatewayCall(session, gateway, payment, ExchangeKind.RETURN_VERIFIED)
        reference = payment.reference
        session.commit()  # verifying may call the gateway: hold no transaction across it
        try:
            event = gateway.verify_return(params)
        except SignatureError:
            log.warning("unsigned or forged return for %s", reference)
            event = None
        except GatewayError as exc:  # verified, but the status could not be read: poll later
            log.warning("return for %s not confirmed: %s", reference, call.mask(exc.message))
            event = None
        if event is not None and event.reference == reference:
            call.apply(event, signature_valid=True)
            return session.get(Payment, payment.id)
    enqueue(session, "payment.fetch_status", {"payment_id": payment.id}, lab_id=link.lab_id,
            run_at=utcnow() + timedelta(seconds=type(gateway).return_check_delay),
            dedupe=f"fetch-status-{payment.id}")
    session.commit()
    return payment


def fetch_and_apply(session: Session, config: Mapping[str, Any], payment_id: int) -> Applied | None:
    """Asks the gateway for a pending payment's status and applies the answer like a webhook."""
    payment = session.get(Payment, payment_id)
    if payment is None or payment.status != PaymentStatus.PENDING:
        return None
    gateway = configured_gateway(session, config, payment.lab_id, payment.gateway)
    call = GatewayCall(session, gateway, payment, ExchangeKind.STATUS_FETCHED)
    reference, checkout_id = payment.reference, payment.checkout_id
    event = call.send(lambda: gateway.fetch_status(reference, checkout_id),
                      failed="status could not be fetched")
    return call.apply(event)
