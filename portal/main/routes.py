from flask import render_template
from flask_login import login_required

from ..extensions import db_session
from ..services.dashboard import today as dashboard_today
from ..tenancy import current_lab
from . import bp


@bp.get("/")
@login_required
def dashboard():
    """Today at the lab, in its own time zone, and what needs someone's attention."""
    lab = current_lab()
    return render_template("main/dashboard.html", lab=lab,
                           today=dashboard_today(db_session(), lab))

