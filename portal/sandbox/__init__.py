from flask import Blueprint

bp = Blueprint("sandbox", __name__)

from . import routes  # noqa: E402,F401
