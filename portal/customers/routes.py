"""The lab's patients: search, their links and payments, and their saved payment methods."""

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from gateways import GATEWAYS

from ..edge import row_id
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import PaymentStatus
from ..money import format_money
from ..services import customers
from ..services.links import get_link
from ..services.profiles import ProfileError, active_profiles
from ..tenancy import client_ip, current_lab
from . import bp
from .forms import ChargeSavedMethodForm


def gateway_name(name: str) -> str:
    cls = GATEWAYS.get(name)
    return cls.display_name if cls else name


def method_label(profile) -> str:
    """'Visa ending 4242, expires 12/2034 (Stripe)'."""
    label = f"{(profile.brand or 'card').capitalize()} ending {profile.last4 or '····'}"
    if profile.exp_month and profile.exp_year:
        label += f", expires {profile.exp_month:02d}/{profile.exp_year}"
    return f"{label} ({gateway_name(profile.gateway)})"


def _charge_form(lab, profiles, links, formdata=None) -> ChargeSavedMethodForm:
    return ChargeSavedMethodForm(
        formdata=formdata,
        profiles=[(str(p.id), method_label(p)) for p in profiles],
        links=[(str(link.id), f"Bill {link.bill_reference}: "
                f"{format_money(link.outstanding, link.currency, lab.locale)} due")
               for link in links])


def _customer(customer_id: int):
    return customers.get_customer(db_session(), current_user.lab_id, customer_id) or abort(404)


@bp.get("/customers")
@login_required
def index():
    query = request.args.get("q", "").strip()
    before = request.args.get("before", type=row_id)
    lab = current_lab()
    rows, next_cursor = customers.search_customers(db_session(), lab.id, query=query,
                                                   country=lab.country, before_id=before)
    return render_template("customers/index.html", lab=lab, customers=rows,
                           query=query, before=before, next_cursor=next_cursor)


def _detail(customer, form: ChargeSavedMethodForm | None = None, status: int = 200):
    session = db_session()
    lab = current_lab()
    before = request.args.get("before", type=row_id)
    links, next_cursor = customers.customer_links(session, customer, before_id=before)
    profiles = active_profiles(session, lab.id, customer.id)
    chargeable = [p for p in profiles if customers.can_charge(p)]
    open_links = customers.open_links(session, customer)
    if form is None:
        form = _charge_form(lab, chargeable, open_links)
    return render_template(
        "customers/detail.html", lab=lab, customer=customer, links=links, before=before,
        next_cursor=next_cursor, payments=customers.payments_of(session, lab.id, links),
        profiles=profiles, chargeable=chargeable, open_links=open_links, form=form,
        method_label=method_label, gateway_name=gateway_name), status


@bp.get("/customers/<int:customer_id>")
@login_required
def detail(customer_id: int):
    return _detail(_customer(customer_id))


@bp.post("/customers/<int:customer_id>/charge")
@login_required
def charge(customer_id: int):
    session = db_session()
    customer = _customer(customer_id)
    lab = current_lab()
    profiles = [p for p in active_profiles(session, lab.id, customer.id)
                if customers.can_charge(p)]
    form = _charge_form(lab, profiles, customers.open_links(session, customer),
                        formdata=request.form)
    if not form.validate_on_submit():
        return _detail(customer, form, 422)
    profile = customers.get_profile(session, customer, int(form.profile_id.data)) or abort(404)
    link = get_link(session, lab.id, int(form.link_id.data)) or abort(404)
    try:
        payment, _ = customers.charge_saved_method(
            session, current_app.config, customer, profile, link, user_id=current_user.id,
            ip=client_ip())
    except ProfileError as exc:
        session.rollback()
        flash(_s("The saved method was not charged: %(error)s", error=exc), "error")
    else:
        bill = f"bill {link.bill_reference}"
        if payment.status == PaymentStatus.SUCCEEDED:
            flash(_s("%(method)s was charged for %(bill)s.", method=method_label(profile),
                     bill=bill), "success")
        elif payment.status == PaymentStatus.FAILED:
            flash(_s("The saved method was declined for %(bill)s: %(reason)s", bill=bill,
                     reason=payment.failure_reason or _s("the gateway gave no reason")),
                  "error")
        else:
            flash(_s("The charge for %(bill)s is being processed by the gateway.", bill=bill),
                  "success")
    return redirect(url_for("customers.detail", customer_id=customer.id), 303)


@bp.post("/customers/<int:customer_id>/profiles/<int:profile_id>/delete")
@login_required
def delete_profile(customer_id: int, profile_id: int):
    session = db_session()
    customer = _customer(customer_id)
    profile = customers.get_profile(session, customer, profile_id) or abort(404)
    label = method_label(profile)
    try:
        customers.remove_profile(session, current_app.config, profile, user_id=current_user.id,
                                 ip=client_ip())
    except ProfileError as exc:
        session.rollback()
        flash(_s("%(method)s was not removed: %(error)s", method=label, error=exc), "error")
    else:
        flash(_s("%(method)s was removed here and at %(gateway)s.", method=label,
                 gateway=gateway_name(profile.gateway)), "success")
    return redirect(url_for("customers.detail", customer_id=customer.id), 303)
