from flask import Blueprint

bp = Blueprint("admin", __name__)

from . import api_keys, audit, inbox, integrations, lab, messages, routes, users  # noqa: E402,F401
