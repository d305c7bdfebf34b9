"""Refunds from a payment's page (`/transactions/<id>`): request, approve, reject. Admins only."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, current_app, flash, g, make_response, redirect, url_for
from flask_login import current_user
from sqlalchemy import select

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import SETTLED_PAYMENT_STATES, Lab, Payment, Refund, RefundStatus, User
from ..money import format_money
from ..services.counter import COUNTER
from ..services.refunds import (
    OPEN_REFUND_STATES,
    RefundNotAllowed,
    approve_refund,
    gateway_refund_support,
    refundable,
    reject_refund,
    request_refund,
)
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .refund_forms import RefundForm
from .routes import detail


@dataclass(frozen=True)
class RefundPanel:
    """What `transactions/_refunds.html` shows for one payment to the signed-in user."""

    remaining: int
    in_flight: int
    note: str | None  # why there is no form, when that is the gateway's doing
    form: RefundForm | None  # admins only, and only where a refund is possible
    people: dict[int, str]  # user id -> email, for "requested by" and "approved by"
    threshold: int | None
    refused: list[str]  # why a refund just sent was refused, when no form is shown any more


def refund_panel(payment: Payment, lab: Lab) -> RefundPanel:
    supported, partial = gateway_refund_support(payment.gateway)
    remaining = max(refundable(payment), 0)
    note = None
    if payment.gateway == COUNTER:
        note = ("Taken at the counter: refund it at the desk. A counter payment cannot be "
                "refunded through a gateway.")
    elif not supported:
        note = f"The {payment.gateway} gateway does not take refunds from the portal."
    elif not partial:
        note = "This gateway refunds only the whole remaining amount."
    form = None
    sent = g.get("refund_form")
    if current_user.is_admin and supported and remaining > 0 \
            and payment.status in SETTLED_PAYMENT_STATES:
        form = sent or RefundForm.blank(payment, lab, remaining)
    ids = {i for r in payment.refunds for i in (r.requested_by_id, r.approved_by_id) if i}
    people = {row.id: row.email for row in db_session().execute(
        select(User.id, User.email).where(User.id.in_(ids)))} if ids else {}
    in_flight = sum(r.amount for r in payment.refunds if r.status in OPEN_REFUND_STATES)
    return RefundPanel(remaining=remaining, in_flight=in_flight, note=note, form=form,
                       people=people, threshold=lab.refund_approval_threshold,
                       refused=[] if form is not None or sent is None
                       else [*sent.form_errors, *sent.refund_amount.errors])


@bp.context_processor
def _refund_helpers():
    return {"refund_panel": refund_panel}


def _payment(payment_id: int) -> Payment:
    return db_session().scalar(select(Payment).where(
        Payment.id == payment_id, Payment.lab_id == current_user.lab_id)) or abort(404)


def _back(payment_id: int):
    return redirect(url_for("transactions.detail", payment_id=payment_id) + "#refunds", 303)


@bp.post("/transactions/<int:payment_id>/refund", endpoint="refund")
@admin_required
def request_refund_view(payment_id: int):
    session = db_session()
    payment = _payment(payment_id)
    lab = current_lab()
    form = RefundForm(payment=payment, lab=lab, remaining=refundable(payment))
    if form.validate_on_submit():
        try:
            refund = request_refund(session, current_app.config, payment.id, form.amount_minor,
                                    form.refund_reason.data, user_id=current_user.id,
                                    ip=client_ip(), key=form.refund_key.data)
        except RefundNotAllowed as exc:
            session.rollback()
            target = form.refund_amount if exc.field == "amount" else None
            (target.errors if target is not None else form.form_errors).append(str(exc))
        else:
            _flash_outcome(refund, lab)
            return _back(payment_id)
    # The payment's page again, with the form as sent and its messages.
    session.expire_all()
    g.refund_form = form
    response = make_response(detail(payment_id))
    response.status_code = 422
    return response


def _flash_outcome(refund: Refund, lab: Lab) -> None:
    amount = format_money(refund.amount, refund.payment.currency, lab.locale)
    if refund.status == RefundStatus.AWAITING_APPROVAL:
        flash(_s("The refund of %(amount)s waits for another admin to approve it.",
                 amount=amount), "success")
    elif refund.status == RefundStatus.SUCCEEDED:
        flash(_s("%(amount)s refunded.", amount=amount), "success")
    elif refund.status == RefundStatus.FAILED:
        flash(_s("The gateway refused the refund of %(amount)s: %(reason)s", amount=amount,
                 reason=refund.failure_reason), "error")
    elif refund.status == RefundStatus.REJECTED:
        flash(_s("The refund of %(amount)s was rejected.", amount=amount), "error")
    elif refund.gateway_refund_id:
        flash(_s("The gateway accepted the refund of %(amount)s; it confirms it shortly.",
                 amount=amount), "success")
    elif refund.failure_reason is None:  # a repeated press while the first is still sending
        flash(_s("The refund of %(amount)s is being sent to the gateway.", amount=amount),
              "success")
    else:
        flash(_s("The gateway did not answer. The refund of %(amount)s will be sent again "
                 "shortly, once only.", amount=amount), "error")


def _refund(refund_id: int) -> Refund:
    return db_session().scalar(select(Refund).where(
        Refund.id == refund_id, Refund.lab_id == current_user.lab_id)) or abort(404)


@bp.post("/refunds/<int:refund_id>/approve", endpoint="approve_refund")
@admin_required
def approve_refund_view(refund_id: int):
    session = db_session()
    refund = _refund(refund_id)
    payment_id = refund.payment_id
    try:
        refund = approve_refund(session, current_app.config, current_user.lab_id, refund.id,
                                user_id=current_user.id, ip=client_ip())
    except RefundNotAllowed as exc:
        session.rollback()
        flash(str(exc), "error")
    else:
        _flash_outcome(refund, current_lab())
    return _back(payment_id)


@bp.post("/refunds/<int:refund_id>/reject", endpoint="reject_refund")
@admin_required
def reject_refund_view(refund_id: int):
    session = db_session()
    refund = _refund(refund_id)
    payment_id = refund.payment_id
    try:
        refund = reject_refund(session, current_user.lab_id, refund.id,
                               user_id=current_user.id, ip=client_ip())
    except RefundNotAllowed as exc:
        session.rollback()
        flash(str(exc), "error")
    else:
        amount = format_money(refund.amount, refund.payment.currency, current_lab().locale)
        if refund.requested_by_id == current_user.id:
            flash(_s("The refund of %(amount)s was withdrawn.", amount=amount), "success")
        else:
            flash(_s("The refund of %(amount)s was rejected.", amount=amount), "success")
    return _back(payment_id)

