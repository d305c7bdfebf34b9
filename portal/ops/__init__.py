"""For operators and their machines: /healthz, /readyz and /metrics (no staff login)."""

from flask import Blueprint

bp = Blueprint("ops", __name__)

from . import routes  # noqa: E402,F401
