"""`/healthz` (the process answers), `/readyz` (it can serve: database, schema, a worker) and
`/metrics` (Prometheus text, behind `PORTAL_METRICS_TOKEN`)."""

from __future__ import annotations

import hmac

from flask import Response, abort, current_app, jsonify, request

from ..extensions import db_session
from ..services import health
from . import bp


@bp.get("/healthz")
def healthz():
    """For load balancers: the process is alive. No database: a database outage must not make
    every node look dead at once (that is /readyz's question)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    report = health.readiness(db_session())
    body = {"status": "ready" if report.ready else "not ready", "checks": report.checks}
    if not report.ready:
        body["reasons"] = report.reasons
    return jsonify(body), 200 if report.ready else 503


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("PORTAL_METRICS_TOKEN")
    if not token:
        abort(404)
    scheme, _, presented = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()):
        return Response("A valid metrics token is required: Authorization: Bearer <token>.\n",
                        401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    from .. import exposition

    body, content_type = exposition.render(db_session())
    return Response(body, 200, content_type=content_type)
