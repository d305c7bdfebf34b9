"""/admin/lab: the lab's own settings; and the lab's branding on the patient's pages."""

import re
from typing import NamedTuple

from flask import Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import CombinedMultiDict

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..models import Lab
from ..services import lab_settings
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .lab_forms import LabForm

FIELD_LABELS = {
    "name": _l("name"), "currency": _l("currency"), "timezone": _l("time zone"),
    "locale": _l("number and date format"), "default_language": _l("patients' language"),
    "default_expiry_hours": _l("link expiry"), "reminder_hours_before": _l("reminders"),
    "refund_approval_threshold": _l("refund approval amount"),
    "refund_reasons": _l("refund reasons"), "brand_color": _l("brand colour"),
    "logo_sha256": _l("logo"), "min_part_payment": _l("smallest part payment"),
    "address": _l("address"), "phone": _l("phone"), "email": _l("email"),
}


@bp.route("/admin/lab", methods=["GET", "POST"])
@admin_required
def lab_settings_page():
    session = db_session()
    lab = current_lab()
    form = LabForm(formdata=(CombinedMultiDict((request.files, request.form))
                             if request.method == "POST" else None),
                   current_timezone=lab.timezone, country=lab.country)
    if request.method == "GET":
        form.load(lab)
    if form.validate_on_submit():
        changed = lab_settings.update_lab(session, lab, form.to_settings(lab),
                                          user_id=current_user.id, ip=client_ip(),
                                          logo=form.new_logo)
        session.commit()
        if changed:
            flash(_s("Lab settings saved: %(fields)s.",
                     fields=", ".join(str(FIELD_LABELS[f]) for f in changed)), "success")
        else:
            flash(_s("Nothing to save: the settings are unchanged."), "success")
        return redirect(url_for("admin.lab_settings_page"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("admin/lab.html", lab=lab, form=form), status


# --- branding on the patient's pages -----------------------------------------------------------

@bp.get("/brand/<colour>.css")
def brand_css(colour: str):
    """The pay page's colours; public and immutable: the URL names the colour."""
    if not re.fullmatch(r"[0-9a-f]{6}", colour):
        abort(404)
    response = Response(lab_settings.brand_css("#" + colour), mimetype="text/css")
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


@bp.get("/brand/logo/<int:lab_id>/<digest>.<ext>")
def brand_logo(lab_id: int, digest: str, ext: str):
    """The lab's logo from our own origin; public and immutable: the URL names its hash."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        abort(404)
    lab = db_session().get(Lab, lab_id)
    if (lab is None or lab.logo_sha256 != digest or not lab.logo_image
            or lab_settings.LOGO_EXTENSIONS.get(lab.logo_content_type or "") != ext):
        abort(404)
    response = Response(lab.logo_image, mimetype=lab.logo_content_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


class LogoImage(NamedTuple):
    src: str
    width: int
    height: int


LOGO_HEIGHT = 48  # CSS pixels: .pay__logo's max-height of 3rem
_logo_sizes: dict[str, tuple[int, int]] = {}  # by hash: the page needs no image bytes


@bp.app_template_global()
def lab_logo(lab) -> LogoImage | None:
    """The lab's logo as our own URL, with the width and height it is shown at; or None."""
    digest = getattr(lab, "logo_sha256", None)
    ext = lab_settings.LOGO_EXTENSIONS.get(getattr(lab, "logo_content_type", None) or "")
    if not digest or not ext:
        return None
    size = _logo_sizes.get(digest)
    if size is None:
        size = lab_settings.image_size(lab.logo_image or b"", lab.logo_content_type)
        if size is None:
            return None
        if len(_logo_sizes) > 1000:
            _logo_sizes.clear()
        _logo_sizes[digest] = size
    width, height = size
    return LogoImage(src=url_for("admin.brand_logo", lab_id=lab.id, digest=digest, ext=ext),
                     width=max(1, round(width * LOGO_HEIGHT / height)), height=LOGO_HEIGHT)
