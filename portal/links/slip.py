"""`/links/<id>/print`: the bill slip with the link's QR code, for A4 or an 80 mm printer."""

from flask import abort, current_app, render_template, request
from flask_login import current_user, login_required

from .. import i18n
from ..extensions import db_session
from ..models import OPEN_LINK_STATES
from ..services.links import get_link
from ..services.messages import language_of
from ..tenancy import current_lab
from ..tokens import patient_url
from . import bp

PAPERS = {"a4": "A4 page", "80mm": "80 mm receipt"}


@bp.get("/links/<int:link_id>/print")
@login_required
def print_slip(link_id: int):
    link = get_link(db_session(), current_user.lab_id, link_id) or abort(404)
    if link.effective_status() not in OPEN_LINK_STATES:
        abort(410, "This link can no longer be paid, so it has no slip to print.")
    paper = request.args.get("paper", "a4")
    if paper not in PAPERS:
        abort(404)
    lab = current_lab()
    with i18n.speaking(language_of(lab, link)):  # the patient's slip, in the link's language
        return render_template("links/print.html", link=link, lab=lab, paper=paper,
                               papers=PAPERS, status=link.effective_status(),
                               patient_url=patient_url(current_app.config["PORTAL_BASE_URL"],
                                                       link.token))
