"""Accepting an invite, setting one's own password (forced after a one-time password), and
one's own account page: the open sessions, and signing out of every other device."""

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..admin.user_forms import ChangePasswordForm, SetPasswordForm
from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..models import utcnow
from ..services import staff_sessions, users
from ..services.auth import verify_password
from ..tenancy import client_ip
from . import bp, sessions

# Reachable while a one-time password is still in use; everything else sends you to change it.
OPEN_WITH_ONE_TIME_PASSWORD = frozenset({"auth.change_password", "auth.logout"})


def _must_change(user) -> bool:
    return users.must_change_password(current_app.config["SECRET_KEY"], user)


@bp.before_app_request
def one_time_password_first():
    """Someone signed in with a one-time password chooses their own before anything else."""
    if request.endpoint in (None, "static") or request.blueprint in sessions.NO_STAFF_SESSION:
        return None
    if not current_user.is_authenticated:
        return None
    if request.endpoint not in OPEN_WITH_ONE_TIME_PASSWORD and _must_change(current_user):
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
            "errors/error.html", code=410, title=_s("This invitation link cannot be used"),
            message=_s("It has expired or has been used already. Ask an admin of your lab for "
                       "a new one.")), 410
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            users.set_password(session, user, form.password.data, reason="invite",
                               ip=client_ip())
        except ValueError as exc:
            form.password.errors.append(str(exc))
        else:
            sessions.begin(session, user)
            session.commit()
            flash(_s("Welcome! Your password is set."), "success")
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
                sessions.begin(session, user)  # every session ended; this browser gets a new one
                session.commit()
                flash(_s("Your password is changed. You are signed out on every other device."),
                      "success")
                return redirect(url_for("main.dashboard"), 303)
    status = 422 if request.method == "POST" else 200
    return render_template("auth/password.html", form=form, forced=forced), status


@bp.get("/account")
@login_required
def account():
    session = db_session()
    open_sessions = staff_sessions.active(session, current_user.id, now=utcnow(),
                                          limits=sessions.limits())
    return render_template("auth/account.html", open_sessions=open_sessions,
                           this_session=sessions.current_session_id(),
                           lab=current_user.lab)


@bp.post("/account/sign-out-others")
@login_required
def sign_out_others():
    """Ends every session of this user, this one's id too (a copy of the cookie may be out
    there), and signs this browser back in under a new id: the person stays where they are."""
    session = db_session()
    user = current_user._get_current_object()
    staff_sessions.revoke_for_user(session, user, actor_id=user.id, ip=client_ip(),
                                   now=utcnow(), scope="self")
    sessions.begin(session, user)
    session.commit()
    flash(_s("You are signed out on every other device. You stay signed in here."), "success")
    return redirect(url_for("auth.account"), 303)
