"""/admin/users: add people by invite link or one-time password, roles, deactivation, and
signing someone out of every device."""

from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user

from ..auth.sessions import limits as session_limits
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import Role, utcnow
from ..services import staff_sessions, users
from ..tenancy import admin_required, client_ip, current_lab
from . import bp
from .user_forms import NewUserForm, ResetAccessForm, RoleForm


def _invite_url(token: str | None) -> str | None:
    if token is None:
        return None
    return current_app.config["PORTAL_BASE_URL"] + url_for("auth.accept_invite", token=token)


def _render_list(form: NewUserForm, access: users.Access | None = None, status: int = 200):
    session = db_session()
    lab = current_lab()
    rows = users.list_users(session, lab.id)
    secret = current_app.config["SECRET_KEY"]
    must_change = {u.id for u in rows if users.must_change_password(secret, u)}
    return render_template("admin/users.html", lab=lab, users=rows, form=form,
                           must_change=must_change, access=access,
                           invite_url=_invite_url(access and access.invite_token)), status


def _render_user(user, *, role_form=None, reset_form=None, access=None, error=None,
                 status: int = 200):
    role_form = role_form or RoleForm(formdata=None, role=user.role.value)
    open_sessions = staff_sessions.active(db_session(), user.id, now=utcnow(),
                                          limits=session_limits())
    return render_template(
        "admin/user.html", lab=current_lab(), user=user, role_form=role_form,
        open_sessions=open_sessions,
        reset_form=reset_form or ResetAccessForm(formdata=None), access=access, error=error,
        invite_url=_invite_url(access and access.invite_token),
        must_change=users.must_change_password(current_app.config["SECRET_KEY"], user)
    ), status


@bp.get("/admin/users")
@admin_required
def users_index():
    return _render_list(NewUserForm(formdata=None))


@bp.post("/admin/users")
@admin_required
def users_create():
    form = NewUserForm()
    if not form.validate_on_submit():
        return _render_list(form, status=422)
    session = db_session()
    try:
        access = users.create_user(
            session, current_app.config["SECRET_KEY"], current_user.lab_id,
            email=form.email.data, name=form.name.data or "", role=Role(form.role.data),
            how=form.how.data, actor_id=current_user.id, ip=client_ip())
    except users.UserError as exc:
        session.rollback()
        form.email.errors.append(str(exc))
        return _render_list(form, status=422)
    session.commit()
    # Rendered, not redirected: the password or link must not travel in the session cookie.
    return _render_list(NewUserForm(formdata=None), access, status=201)


@bp.get("/admin/users/<int:user_id>")
@admin_required
def user_detail(user_id: int):
    user = users.get_user(db_session(), current_user.lab_id, user_id) or abort(404)
    return _render_user(user)


@bp.post("/admin/users/<int:user_id>/role")
@admin_required
def user_role(user_id: int):
    session = db_session()
    user = users.get_user(session, current_user.lab_id, user_id) or abort(404)
    form = RoleForm()
    if not form.validate_on_submit():
        return _render_user(user, role_form=form, status=422)
    try:
        users.change_role(session, current_user.lab_id, user_id, Role(form.role.data),
                          actor_id=current_user.id, ip=client_ip())
    except users.UserError as exc:
        session.rollback()
        form.role.errors.append(str(exc))
        return _render_user(users.get_user(session, current_user.lab_id, user_id),
                            role_form=form, status=409)
    session.commit()
    flash(_s("%(email)s is now %(role)s.", email=user.email, role=user.role.value), "success")
    if not current_user.is_admin:  # demoted oneself: the admin pages are closed now
        return redirect(url_for("main.dashboard"), 303)
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@bp.post("/admin/users/<int:user_id>/deactivate")
@admin_required
def user_deactivate(user_id: int):
    session = db_session()
    user = users.get_user(session, current_user.lab_id, user_id) or abort(404)
    try:
        users.deactivate(session, current_user.lab_id, user_id, actor_id=current_user.id,
                         ip=client_ip())
    except users.UserError as exc:
        session.rollback()
        return _render_user(users.get_user(session, current_user.lab_id, user_id),
                            error=str(exc), status=409)
    session.commit()
    flash(_s("%(email)s is deactivated and signed out.", email=user.email), "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@bp.post("/admin/users/<int:user_id>/sign-out")
@admin_required
def user_sign_out(user_id: int):
    session = db_session()
    user = users.get_user(session, current_user.lab_id, user_id) or abort(404)
    try:
        users.sign_out_everywhere(session, current_user.lab_id, user_id,
                                  actor_id=current_user.id, ip=client_ip())
    except users.UserError as exc:
        session.rollback()
        return _render_user(user, error=str(exc), status=409)
    session.commit()
    flash(_s("%(email)s is signed out on every device.", email=user.email), "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), 303)


@bp.post("/admin/users/<int:user_id>/reactivate")
@admin_required
def user_reactivate(user_id: int):
    return _issue(user_id, users.reactivate)


def _issue(user_id: int, service):
    """Reset or reactivation: a new way in, shown once."""
    session = db_session()
    user = users.get_user(session, current_user.lab_id, user_id) or abort(404)
    form = ResetAccessForm()
    if not form.validate_on_submit():
        return _render_user(user, reset_form=form, status=422)
    try:
        access = service(session, current_app.config["SECRET_KEY"], current_user.lab_id,
                         user_id, how=form.how.data, actor_id=current_user.id, ip=client_ip())
    except users.UserError as exc:
        session.rollback()
        return _render_user(users.get_user(session, current_user.lab_id, user_id),
                            reset_form=form, error=str(exc), status=409)
    session.commit()
    return _render_user(user, access=access)


@bp.post("/admin/users/<int:user_id>/reset")
@admin_required
def user_reset(user_id: int):
    return _issue(user_id, users.reset_access)
