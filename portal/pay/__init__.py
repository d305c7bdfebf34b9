from flask import Blueprint

bp = Blueprint("pay", __name__)

from . import routes  # noqa: E402,F401
