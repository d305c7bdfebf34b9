from datetime import timedelta
from zoneinfo import ZoneInfo

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import i18n
from ..edge import row_id
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import LinkStatus, utcnow
from ..services import messages
from ..services.customers import get_customer
from ..services.keys import is_configured
from ..services.links import (
    MAX_QUERY,
    LinkError,
    NewLink,
    PatientChoiceNeeded,
    cancel_link,
    create_link,
    get_link,
    list_links,
    timeline,
)
from ..services.notifications import NotificationError, link_notifications, resend_link
from ..services.profiles import active_profiles
from ..tenancy import client_ip, current_lab
from ..tokens import patient_url
from . import bp
from .forms import NewLinkForm


@bp.get("/links")
@login_required
def index():
    status = request.args.get("status") or None
    if status is not None and status not in LinkStatus.__members__.values():
        abort(400, "Unknown status filter.")
    before = request.args.get("before", type=row_id)
    lab = current_lab()
    q = (request.args.get("q") or "").strip()[:MAX_QUERY]
    links, next_cursor = list_links(db_session(), lab.id,
                                    status=LinkStatus(status) if status else None,
                                    before_id=before, query=q, country=lab.country)
    return render_template("links/index.html", links=links, status=status, q=q,
                           next_cursor=next_cursor, before=before, lab=lab,
                           statuses=list(LinkStatus), now=utcnow())


@bp.route("/links/new", methods=["GET", "POST"])
@login_required
def new():
    lab = current_lab()
    session = db_session()
    form = NewLinkForm(lab=lab)
    candidates: list = []  # patients the contact already belongs to, when staff must choose
    if request.method == "GET":
        form.currency.data = lab.currency
        form.language.data = lab.default_language
        local_expiry = (utcnow() + timedelta(hours=lab.default_expiry_hours)).astimezone(
            ZoneInfo(lab.timezone))
        form.expires_at.data = local_expiry.replace(tzinfo=None, second=0, microsecond=0)
        patient = get_customer(session, lab.id, request.args.get("customer", type=row_id) or 0)
        if patient is not None:  # "New link for this patient" from their page
            form.patient_name.data = patient.name
            form.phone.data = patient.phone or ""
            form.email.data = patient.email or ""
            form.patient_match.data = str(patient.id)
    chosen = get_customer(session, lab.id, form.chosen_customer_id or 0)
    if form.validate_on_submit():
        try:
            link = create_link(session, lab, NewLink(
                patient_name=form.patient_name.data.strip(), phone=form.phone_e164,
                email=(form.email.data or "").strip().lower() or None,
                amount=form.amount_minor, currency=form.currency.data,
                bill_reference=form.bill_reference.data.strip(),
                description=(form.description.data or "").strip(),
                expires_at=form.expires_at_utc, allow_partial=form.allow_partial.data,
                notify=form.notify, language=i18n.normalize(form.language.data),
                customer_id=chosen.id if chosen else None,
                rename_customer=bool(chosen and form.rename_patient.data),
                new_patient=form.new_patient, ask_if_other_name=True,
            ), user_id=current_user.id, ip=client_ip())
        except PatientChoiceNeeded as exc:
            session.rollback()
            candidates = exc.candidates
            form.patient_match.data = ""
            form.patient_match.errors = [_s(
                "This mobile number or email is already on the record of %(names)s. Choose "
                "whether %(name)s is the same person or a new patient.",
                names=_s(" and ").join(c.name for c in candidates),
                name=form.patient_name.data.strip())]
        except LinkError as exc:
            session.rollback()
            form.expires_at.errors.append(str(exc))
        else:
            session.commit()
            ways = {"sms": _s("SMS"), "email": _s("email"), "whatsapp": _s("WhatsApp")}
            sending = _s(" and ").join(ways[c] for c in form.notify)
            if form.at_desk.data:
                flash(_s("Payment link created. Let the patient scan the QR code."), "success")
            else:
                flash(_s("Payment link created. Sending it by %(ways)s.", ways=sending)
                      if sending else _s("Payment link created."), "success")
            return redirect(url_for("links.detail", link_id=link.id), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("links/new.html", form=form, lab=lab, candidates=candidates,
                           chosen=chosen, gateway_ready=is_configured(session, lab.id,
                                                                      lab.default_gateway)), status


@bp.get("/links/<int:link_id>")
@login_required
def detail(link_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    url = patient_url(current_app.config["PORTAL_BASE_URL"], link.token)
    return render_template("links/detail.html", link=link, lab=current_lab(), patient_url=url,
                           exchanges=timeline(session, link), status=link.effective_status(),
                           gateway_ready=is_configured(session, link.lab_id, link.gateway),
                           saved_methods=active_profiles(session, link.lab_id, link.customer_id),
                           notifications=link_notifications(session, link),
                           whatsapp_share=messages.share_on_whatsapp(
                               current_lab(), link, current_app.config["PORTAL_BASE_URL"]),
                           whatsapp_ready=messages.whatsapp_ready(current_lab()),
                           now=utcnow())


@bp.post("/links/<int:link_id>/cancel")
@login_required
def cancel(link_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    try:
        cancel_link(session, link, user_id=current_user.id, ip=client_ip())
    except LinkError as exc:
        session.rollback()
        flash(str(exc), "error")
    else:
        session.commit()
        flash(_s("The link is cancelled. The patient can no longer pay it."), "success")
    return redirect(url_for("links.detail", link_id=link_id), 303)


@bp.post("/links/<int:link_id>/resend")
@login_required
def resend(link_id: int):
    session = db_session()
    link = get_link(session, current_user.lab_id, link_id) or abort(404)
    channel = request.form.get("channel")
    if channel not in ("email", "sms", "whatsapp"):
        abort(400, "Choose email, SMS or WhatsApp.")
    try:
        row = resend_link(session, link, channel, user_id=current_user.id, ip=client_ip())
    except NotificationError as exc:
        session.rollback()
        flash(str(exc), "error")
    else:
        session.commit()
        flash(_s("The link will be sent again to %(recipient)s.", recipient=row.recipient),
              "success")
    return redirect(url_for("links.detail", link_id=link_id), 303)
