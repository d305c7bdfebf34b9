"""Accepting an invite, setting one's own password (forced after a one-time password), and
sessions that end when the password changes."""

from flask import current_app, flash, redirect, render_template, request, url_for
from flask import session as cookie_session
from flask_login import current_user, login_required, login_user, logout_user, user_logged_in

from ..admin.user_forms import ChangePasswordForm, SetPasswordForm
from ..extensions import db_session
from ..services import users
from ..services.auth import verify_password
from ..tenancy import client_ip
from . import bp

# Reachable while a one-time password is still in use; everything else sends you to change it.
OPEN_WITH_ONE_TIME_PASSWORD = frozenset({"auth.change_password", "auth.logout"})
PASSWORD_IN_SESSION = "password_fp"  # nosec B105  # a session key name, not a password


def _must_change(user) -> bool:
    return users.must_change_password(current_app.config["SECRET_KEY"], user)


def _bind_session(user) -> None:
    cookie_session[PASSWORD_IN_SESSION] = users.password_fingerprint(user.password_hash)


@user_logged_in.connect
def _on_sign_in(_app, user, **_extra) -> None:
    _bind_session(user)


@bp.before_app_request
def session_follows_the_password():
    """Ends a session whose user's password changed since; enforces a one-time password's change.

    A reset, a deactivation or a new password elsewhere replaces the hash, so without this an
    old cookie would live on (and come back to life when a deactivated user is reactivated).
    """
    if request.endpoint in (None, "static") or not current_user.is_authenticated:
        return None
    user = current_user._get_current_object()
    if cookie_session.get(PASSWORD_IN_SESSION) != users.password_fingerprint(user.password_hash):
        logout_user()
        return None
    if request.endpoint not in OPEN_WITH_ONE_TIME_PASSWORD and _must_change(user):
        return redirect(url_for("auth.change_password"), 303)
    return None


# The token rides in the query string: the access log records paths only.
@bp.route("/invite", methods=["GET", "POST"])
def accept_invite():
    session = db_session()
    user = users.user_from_invite(session, current_app.config["SECRET_KEY"],
                                  request.args.get("token", ""))
    if user is None:
        return render_template(
            "errors/error.html", code=410, title="This invitation link cannot be used",
            message="It has expired or has been used already. Ask an admin of your lab for a "
                    "new one."), 410
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            users.set_password(session, user, form.password.data, reason="invite",
                               ip=client_ip())
        except ValueError as exc:
            form.password.errors.append(str(exc))
        else:
            session.commit()
            login_user(user)
            flash("Welcome! Your password is set.", "success")
            return redirect(url_for("main.dashboard"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/invite.html", form=form, user=user), status


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    forced = _must_change(current_user)
    form = SetPasswordForm() if forced else ChangePasswordForm()
    if form.validate_on_submit():
        session = db_session()
        if not forced and not verify_password(current_user.password_hash, form.current.data):
            form.current.errors.append("That is not your current password.")
        else:
            try:
                user = current_user._get_current_object()
                users.set_password(session, user, form.password.data,
                                   reason="one-time password" if forced else "changed",
                                   ip=client_ip())
            except ValueError as exc:
                form.password.errors.append(str(exc))
            else:
                session.commit()
                _bind_session(user)  # this session goes on; others of this user end
                flash("Your password is changed.", "success")
                return redirect(url_for("main.dashboard"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/password.html", form=form, forced=forced), status
