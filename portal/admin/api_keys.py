"""/admin/api-keys: keys for the lab's other systems; each is shown once, then only its prefix."""

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..services import api_keys
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .user_forms import ApiKeyForm


def _render(form: ApiKeyForm, new_key: api_keys.NewApiKey | None = None, status: int = 200):
    lab = current_lab()
    return render_template("admin/api_keys.html", lab=lab, form=form, new_key=new_key,
                           keys=api_keys.list_api_keys(db_session(), lab.id)), status


@bp.get("/admin/api-keys")
@admin_required
def api_keys_index():
    return _render(ApiKeyForm(formdata=None))


@bp.post("/admin/api-keys")
@admin_required
def api_keys_create():
    form = ApiKeyForm()
    if not form.validate_on_submit():
        return _render(form, status=422)
    session = db_session()
    new_key = api_keys.create_api_key(session, current_user.lab_id, form.name.data,
                                      actor_id=current_user.id, ip=client_ip())
    session.commit()
    # Rendered, not redirected: the key must not travel in the session cookie.
    return _render(ApiKeyForm(formdata=None), new_key, status=201)


@bp.post("/admin/api-keys/<int:key_id>/revoke")
@admin_required
def api_key_revoke(key_id: int):
    session = db_session()
    row = api_keys.revoke_api_key(session, current_user.lab_id, key_id,
                                  actor_id=current_user.id, ip=client_ip()) or abort(404)
    session.commit()
    flash(_s("Key %(prefix)s (%(name)s) is revoked: requests with it are refused.",
             prefix=row.prefix, name=row.name), "success")
    return redirect(url_for("admin.api_keys_index"), 303)
