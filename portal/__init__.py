"""The lab payment-link portal: `create_app()` builds it; nothing happens at import."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, Request, jsonify, render_template, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from . import assets, edge, outage, ratelimits
from .config import load_settings
from .extensions import Database, csrf, login_manager
from .observe import redact_path

ROOT = Path(__file__).resolve().parent.parent

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def create_app(overrides: dict | None = None) -> Flask:
    app = Flask(__name__, template_folder=str(ROOT / "templates"),
                static_folder=str(ROOT / "static"),
                instance_path=os.environ.get("PORTAL_INSTANCE_PATH", str(ROOT / "instance")))
    app.config.update(load_settings(app.instance_path))
    if overrides:
        app.config.update(overrides)
    app.session_interface = CookieFirstSessionInterface()
    hops = int(app.config.get("PORTAL_TRUSTED_PROXIES") or 0)
    if hops:  # only when configured: otherwise anyone could forge their address
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    database = Database()
    database.init_app(app)
    edge.init_app(app)  # first: its guard runs before CSRF and every view
    outage.init_app(app, database.engine)
    ratelimits.init_app(app)  # before CSRF: a flood is refused before any other work
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.session_protection = "strong"

    from . import filters, i18n
    from .admin import bp as admin_bp
    from .api import bp as api_bp
    from .auth import bp as auth_bp
    from .customers import bp as customers_bp
    from .links import bp as links_bp
    from .main import bp as main_bp
    from .ops import bp as ops_bp
    from .pay import bp as pay_bp
    from .sandbox import bp as sandbox_bp
    from .transactions import bp as transactions_bp
    from .webhooks import bp as webhooks_bp

    for bp in (ops_bp, main_bp, auth_bp, links_bp, pay_bp, sandbox_bp, webhooks_bp, admin_bp,
               api_bp, transactions_bp):
        app.register_blueprint(bp)
    app.register_blueprint(customers_bp)
    filters.init_app(app)
    i18n.init_app(app)
    _security_headers(app)
    assets.init_app(app)  # after the headers: its compression runs first (LIFO)
    _error_pages(app)
    _logging(app)

    from .cli import register_commands
    register_commands(app)
    return app


class CookieFirstSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, but a request without the cookie (every patient's GET)
    gets its empty session without a signing serializer being built first."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def _security_headers(app: Flask) -> None:
    @app.after_request
    def headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # Pay-page URLs carry the link's token: never send them on as a referrer.
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.endpoint and not request.endpoint.startswith("static"):
            response.headers.setdefault("Cache-Control", "no-store")
        if app.config["PORTAL_BASE_URL"].startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response


_wants_json = edge.wants_json


def _error_pages(app: Flask) -> None:
    from .i18n import staff_gettext

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        if _wants_json():
            return jsonify(error={"code": "csrf_failed", "message": exc.description}), 400
        if request.path.startswith(("/pay/", "/sandbox/")):
            return render_template("pay/form_expired.html", lab=_patient_lab()), 400
        return render_template("errors/error.html", code=400,
                               title=staff_gettext("This form has expired"),
                               message=staff_gettext("Please go back, reload the page and try "
                                                     "again.")), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Retry-After of a 429 or 503 survives the page or JSON body made here.
        headers = [(k, v) for k, v in exc.get_headers() if k == "Retry-After"]
        if _wants_json():
            code = (exc.name or "error").lower().replace(" ", "_")
            return jsonify(error={"code": code, "message": exc.description}), exc.code, headers
        if exc.code == 404 and request.path.startswith("/pay/"):
            return render_template("pay/not_found.html"), 404  # the patient's own words
        if _for_patient():
            return _patient_error(exc.code), exc.code, headers
        titles = {403: staff_gettext("You do not have access to this page"),
                  404: staff_gettext("Page not found"),
                  429: staff_gettext("Too many attempts")}
        messages = {429: staff_gettext("Please wait a minute, then try again.")}
        return render_template("errors/error.html", code=exc.code,
                               title=titles.get(exc.code, exc.name),
                               message=messages.get(exc.code) if exc.code in titles
                               else exc.description), exc.code, headers

    @app.errorhandler(Exception)
    def unexpected(exc):
        app.logger.exception("unhandled error on %s %s", request.method,
                             redact_path(request.path))
        if _wants_json():
            return jsonify(error={"code": "internal_error",
                                  "message": "Something went wrong on our side."}), 500
        if _for_patient():
            return _patient_error(500), 500
        return render_template("errors/error.html", code=500,
                               title=staff_gettext("Something went wrong"),
                               message=staff_gettext("Please try again in a minute.")), 500


def _for_patient() -> bool:
    from .i18n import is_patient_page

    return is_patient_page()


def _patient_error(code: int):
    """An error on a patient's page, in the patient's language and without staff chrome."""
    from .i18n import gettext as _

    if code >= 500:
        title, message = _("Something went wrong"), _("Please try again in a minute.")
    elif code == 429:
        title = _("Too many attempts")
        message = _("Please wait a minute, then try again.")
    else:
        title = _("This page cannot be shown")
        message = _("Please go back and try again, or ask the lab that sent the link.")
    return render_template("pay/error.html", code=code, title=title, message=message,
                           lab=_patient_lab())


def _patient_lab():
    """The lab of the link whose page failed, to name it; None when it cannot be known."""
    from .extensions import db_session
    from .services.links import get_link_by_token
    from .tokens import pay_page_of

    page = pay_page_of(request.path)
    if page is None:
        return None
    try:
        link = get_link_by_token(db_session(), page.removeprefix("/pay/"))
    except Exception:  # the database is what failed: the page goes on without the name
        db_session().rollback()
        return None
    return link.lab if link is not None else None


def _logging(app: Flask) -> None:
    from . import logmask, logs, observe

    if not app.debug:
        logs.configure()
    logmask.install(app.config)
    logmask.remember_stored_secrets(app)
    observe.init_app(app)
