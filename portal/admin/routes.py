from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from gateways import GATEWAYS
from gateways.base import GatewayError
from gateways.http import mask_secrets

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import GatewayMode
from ..services.audit import audit
from ..services.keys import (
    CredentialsError,
    configured_gateway,
    load_credentials,
    save_credentials,
    stored_keys,
)
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .forms import gateway_form


@bp.get("/admin/gateways")
@admin_required
def gateways():
    session = db_session()
    lab = current_lab()
    rows = {name: stored_keys(session, lab.id, name) for name in GATEWAYS}
    return render_template("admin/gateways.html", lab=lab, gateways=GATEWAYS, rows=rows)


@bp.route("/admin/gateways/<name>", methods=["GET", "POST"])
@admin_required
def gateway(name: str):
    cls = GATEWAYS.get(name) or abort(404)
    session = db_session()
    lab = current_lab()
    keys = current_app.config["PORTAL_ENCRYPTION_KEYS"]
    stored = load_credentials(session, keys, lab.id, name)
    row = stored_keys(session, lab.id, name)
    form = gateway_form(cls, stored, formdata=request.form if request.method == "POST" else None)
    if request.method == "GET" and row is not None:
        form.mode.data = row.mode.value
        form.make_default.data = lab.default_gateway == name
    status = 200
    if form.validate_on_submit():
        values = {f.name: getattr(form, f.name).data or "" for f in cls.credential_fields}
        try:
            save_credentials(session, keys, lab, name, values,
                             mode=GatewayMode(form.mode.data),
                             make_default=form.make_default.data, user_id=current_user.id)
        except CredentialsError as exc:
            session.rollback()
            target = getattr(form, exc.field, None) if exc.field else None
            (target.errors if target is not None else form.form_errors).append(str(exc))
            status = 422
        else:
            audit(session, lab_id=lab.id, user_id=current_user.id, action="gateway_keys.update",
                  object_type="gateway", object_id=name, ip=client_ip(),
                  fields_changed=sorted(k for k, v in values.items() if v),
                  mode=form.mode.data, default=form.make_default.data)
            session.commit()
            flash(_s("%(gateway)s settings saved.", gateway=cls.display_name), "success")
            return redirect(url_for("admin.gateways"), 303)
    elif request.method == "POST":
        status = 422
    webhook_url = f"{current_app.config['PORTAL_BASE_URL']}/payments/webhook/{name}"
    return render_template("admin/gateway.html", lab=lab, cls=cls, form=form, stored=stored,
                           webhook_url=webhook_url), status


@bp.post("/admin/gateways/<name>/test")
@admin_required
def test_connection(name: str):
    """One cheap authenticated call with the stored keys; the gateway's own words come back."""
    cls = GATEWAYS.get(name) or abort(404)
    session = db_session()
    lab = current_lab()
    try:
        gateway = configured_gateway(session, current_app.config, lab.id, name)
    except GatewayError:
        flash(_s("Save the %(gateway)s credentials first.", gateway=cls.display_name), "error")
        return redirect(url_for("admin.gateway", name=name), 303)
    secrets = cls.secret_values(gateway.credentials)
    try:
        message, category = gateway.test_connection(), "success"
    except GatewayError as exc:
        message = _s("Connection failed. %(error)s", error=mask_secrets(exc.message, secrets))
        category = "error"
    audit(session, lab_id=lab.id, user_id=current_user.id, action="gateway.test_connection",
          object_type="gateway", object_id=name, ip=client_ip(), ok=category == "success")
    session.commit()
    flash(message, category)
    return redirect(url_for("admin.gateway", name=name), 303)
