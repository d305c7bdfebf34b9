from flask import current_app, render_template, send_from_directory
from flask_login import login_required

from gateways import GATEWAYS

from ..extensions import db_session
from ..services.dashboard import month as dashboard_month
from ..services.dashboard import today as dashboard_today
from ..tenancy import current_lab
from . import bp, charts


@bp.get("/")
@login_required
def dashboard():
    """Today at the lab, in its own time zone, what needs someone's attention, and the last
    30 days."""
    lab = current_lab()
    session = db_session()
    return render_template("main/dashboard.html", lab=lab, today=dashboard_today(session, lab),
                           month=dashboard_month(session, lab), charts=charts,
                           gateway_name=gateway_name)


def gateway_name(name: str) -> str:
    cls = GATEWAYS.get(name)
    return cls.display_name if cls else name


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever a page links (feeds, PDFs, old browsers)."""
    return send_from_directory(current_app.static_folder, "favicon.ico",
                               mimetype="image/vnd.microsoft.icon", max_age=7 * 24 * 3600)

