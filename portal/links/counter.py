"""Payments taken at the desk (cash, card terminal, UPI), recorded from the link page."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, flash, g, make_response, redirect, url_for
from flask_login import current_user, login_required

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import OPEN_LINK_STATES, LinkStatus, OnlinePayment
from ..money import format_money
from ..services.counter import (
    COUNTER_METHODS,
    CounterPaymentError,
    CounterRecord,
    counter_payments,
    record_counter_payment,
)
from ..services.links import get_link
from ..tenancy import client_ip
from . import bp
from .counter_forms import CounterPaymentForm
from .routes import detail


@dataclass(frozen=True)
class CounterPanel:
    form: CounterPaymentForm | None  # only while the link can still be paid
    records: list[CounterRecord]
    refused: list[str]  # why the form just sent was refused, when no form is shown any more


def counter_panel(link: OnlinePayment) -> CounterPanel:
    form = None
    sent = g.get("counter_form")
    if link.effective_status() in OPEN_LINK_STATES and link.outstanding > 0:
        form = sent or CounterPaymentForm.blank(link)
    refused = [] if form is not None or sent is None else [
        *sent.form_errors, *sent.counter_amount.errors]
    return CounterPanel(form=form, records=counter_payments(db_session(), link),
                        refused=refused)


@bp.context_processor
def _counter_helpers():
    return {"counter_panel": counter_panel}


@bp.post("/links/<int:link_id>/counter-payment", endpoint="counter_payment")
@login_required
def counter_payment(link_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    form = CounterPaymentForm(link=link)
    if form.validate_on_submit():
        try:
            payment = record_counter_payment(
                session, link.id, form.amount_minor, form.counter_method.data,
                (form.counter_note.data or "").strip(), user_id=current_user.id,
                ip=client_ip(), key=form.counter_key.data)
        except CounterPaymentError as exc:
            session.rollback()
            target = {"amount": form.counter_amount, "method": form.counter_method}.get(exc.field)
            (target.errors if target is not None else form.form_errors).append(str(exc))
        else:
            session.commit()
            link = payment.online_payment
            received = format_money(payment.amount, payment.currency, link.lab.locale)
            how = COUNTER_METHODS[payment.method].lower()
            if link.status == LinkStatus.PAID:
                flash(_s("%(amount)s received by %(method)s. The bill is paid and the patient's "
                         "online link no longer takes payments.", amount=received, method=how),
                      "success")
            else:
                owed = format_money(link.outstanding, link.currency, link.lab.locale)
                flash(_s("%(amount)s received by %(method)s. %(owed)s is still owed.",
                         amount=received, method=how, owed=owed), "success")
            return redirect(url_for("links.detail", link_id=link_id), 303)
    # The link page again, with the form as sent and its messages.
    session.expire_all()
    g.counter_form = form
    response = make_response(detail(link_id))
    response.status_code = 422
    return response
