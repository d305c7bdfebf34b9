"""The webhook inbox (`/admin/webhooks`) and "Fetch status now" for a pending payment."""

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..edge import row_id
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..services import inbox
from ..tenancy import admin_required, client_ip, current_lab
from . import bp


@bp.get("/admin/webhooks")
@admin_required
def webhooks():
    session = db_session()
    lab = current_lab()
    before = request.args.get("before", type=row_id)
    entries, next_cursor = inbox.list_entries(session, lab.id, before_id=before)
    return render_template("admin/webhooks.html", lab=lab, entries=entries, before=before,
                           next_cursor=next_cursor,
                           pending=inbox.pending_payments(session, lab.id))


@bp.post("/admin/payments/<int:payment_id>/fetch-status")
@admin_required
def fetch_status(payment_id: int):
    session = db_session()
    payment = inbox.get_payment(session, current_user.lab_id, payment_id) or abort(404)
    try:
        outcome = inbox.fetch_now(session, current_app.config, payment,
                                  user_id=current_user.id, ip=client_ip())
    except inbox.FetchFailed as exc:
        flash(_s("Could not ask the gateway about %(reference)s: %(error)s",
                 reference=payment.reference, error=exc), "error")
    else:
        flash(_s("Asked the gateway about %(reference)s: %(outcome)s.",
                 reference=payment.reference, outcome=outcome), "success")
    return redirect(url_for("admin.webhooks"), 303)
