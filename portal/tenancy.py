"""The signed-in user's lab, and the admin-only guard."""

from __future__ import annotations

from functools import wraps

from flask import abort, request
from flask_login import current_user, login_required

from .extensions import db_session
from .models import Lab


def current_lab() -> Lab:
    return db_session().get(Lab, current_user.lab_id)


def client_ip() -> str | None:
    return request.remote_addr


def admin_required(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped
