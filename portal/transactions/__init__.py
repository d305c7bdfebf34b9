from flask import Blueprint

bp = Blueprint("transactions", __name__)

from . import refunds, routes  # noqa: E402,F401
