from flask import Blueprint

bp = Blueprint("admin", __name__)

from . import inbox, messages, routes  # noqa: E402,F401
