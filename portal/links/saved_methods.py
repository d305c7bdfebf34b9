"""Staff actions on a patient's saved payment methods, from the link page."""

from flask import abort, current_app, flash, redirect, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import CustomerPaymentProfile
from ..services.links import get_link
from ..services.profiles import ProfileError, charge_profile, delete_profile
from ..tenancy import client_ip
from . import bp


def _profile(session, profile_id: int) -> CustomerPaymentProfile:
    return session.scalar(select(CustomerPaymentProfile).where(
        CustomerPaymentProfile.id == profile_id,
        CustomerPaymentProfile.lab_id == current_user.lab_id,
        CustomerPaymentProfile.deleted_at.is_(None))) or abort(404)


@bp.post("/links/<int:link_id>/saved-methods/<int:profile_id>/charge")
@login_required
def charge_saved_method(link_id: int, profile_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    profile = _profile(session, profile_id)
    try:
        payment, _ = charge_profile(session, current_app.config, link, profile,
                                    user_id=current_user.id, ip=client_ip())
    except ProfileError as exc:
        session.rollback()
        flash(_s("The saved card was not charged: %(error)s", error=exc), "error")
    else:
        if payment.status.value == "succeeded":
            flash(_s("The saved card was charged."), "success")
        elif payment.status.value == "failed":
            flash(_s("The saved card was declined: %(reason)s", reason=payment.failure_reason),
                  "error")
        else:
            flash(_s("The charge is being processed by the gateway."), "success")
    return redirect(url_for("links.detail", link_id=link_id), 303)


@bp.post("/links/<int:link_id>/saved-methods/<int:profile_id>/delete")
@login_required
def delete_saved_method(link_id: int, profile_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    profile = _profile(session, profile_id)
    if profile.customer_id != link.customer_id:
        abort(404)
    try:
        delete_profile(session, current_app.config, profile, user_id=current_user.id,
                       ip=client_ip())
    except ProfileError as exc:
        session.rollback()
        flash(_s("The saved card was not removed: %(error)s", error=exc), "error")
    else:
        flash(_s("The saved card was removed here and at the gateway."), "success")
    return redirect(url_for("links.detail", link_id=link_id), 303)
