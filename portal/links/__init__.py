from flask import Blueprint

bp = Blueprint("links", __name__)

from . import bulk, counter, routes, saved_methods, slip  # noqa: E402,F401
