from flask import Blueprint

bp = Blueprint("links", __name__)

from . import routes  # noqa: E402,F401
