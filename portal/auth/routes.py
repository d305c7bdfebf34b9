from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..extensions import db_session
from ..i18n import staff_gettext as _s
from ..services.audit import audit
from ..services.auth import authenticate, safe_next_url
from ..tenancy import client_ip
from . import bp, sessions
from .forms import LoginForm

GENERIC_FAILURE = "That email and password do not match an active account."


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("main.dashboard"))
    form = LoginForm(next=request.args.get("next", ""))
    status = 200
    if form.validate_on_submit():
        session = db_session()
        result = authenticate(session, form.email.data, form.password.data, client_ip(),
                              max_failures=current_app.config["PORTAL_LOGIN_MAX_FAILURES"],
                              lock_minutes=current_app.config["PORTAL_LOGIN_LOCK_MINUTES"])
        if result.user is not None:
            audit(session, lab_id=result.user.lab_id, user_id=result.user.id,
                  action="user.login", object_type="user", object_id=result.user.id,
                  ip=client_ip())
            sessions.begin(session, result.user)
            session.commit()
            return redirect(safe_next_url(form.next.data) or url_for("main.dashboard"))
        session.commit()
        status = 429 if result.locked_minutes else 401
        if result.locked_minutes:
            form.form_errors.append(
                "Too many failed sign-ins. Try again in "
                f"{result.locked_minutes} minute{'s' if result.locked_minutes != 1 else ''}.")
        else:
            form.form_errors.append(GENERIC_FAILURE)
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    sessions.end_here(db_session())
    flash(_s("You have signed out."), "info")
    return redirect(url_for("auth.login"))
