"""The JSON API for billing and lab information systems (Bearer API key of one lab)."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from . import endpoints, routes  # noqa: E402,F401
