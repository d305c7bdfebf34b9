from flask import jsonify, redirect, url_for
from flask_login import login_required
from sqlalchemy import text

from ..extensions import db_session
from . import bp


@bp.get("/")
@login_required
def dashboard():
    return redirect(url_for("links.index"))


@bp.get("/healthz")
def healthz():
    """For load balancers: the app answers and its database does too."""
    try:
        db_session().execute(text("SELECT 1"))
    except Exception:
        return jsonify(status="error", database="unreachable"), 503
    return jsonify(status="ok", database="ok")
