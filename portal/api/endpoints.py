"""`/webhook-endpoints`: the lab's own systems register where signed events go (API key)."""

from __future__ import annotations

from flask import current_app, g, jsonify

from ..edge import MAX_ROW_ID
from ..extensions import csrf, db_session
from ..services import outhooks
from ..services.audit import audit
from . import bp
from .errors import ApiError
from .routes import _json_body, _lab
from .validation import require_object

FIELDS = {"url", "events", "description"}


def _endpoint_or_404(endpoint_id: int):
    endpoint = outhooks.get_endpoint(db_session(), g.lab_id, endpoint_id) \
        if endpoint_id <= MAX_ROW_ID else None
    if endpoint is None:
        raise ApiError(404, "not_found", "No webhook endpoint with this id.")
    return endpoint


@bp.get("/webhook-endpoints")
def list_webhook_endpoints():
    rows = outhooks.list_endpoints(db_session(), g.lab_id)
    return jsonify({"data": [outhooks.endpoint_object(e) for e in rows]})


# Not idempotent on purpose: a replayed answer would be a stored copy of the secret.
@bp.post("/webhook-endpoints")
@csrf.exempt
def create_webhook_endpoint():
    body = require_object(_json_body())
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(422, "validation_failed", "Some fields are missing or invalid.",
                       {name[:100]: "Unknown field." for name in unknown})
    url, events, description = body.get("url"), body.get("events"), body.get("description")
    if not isinstance(url, str):
        raise ApiError(422, "validation_failed", "Some fields are missing or invalid.",
                       {"url": "Required: a string."})
    if events is not None and (not isinstance(events, list)
                               or not all(isinstance(e, str) for e in events)):
        raise ApiError(422, "validation_failed", "Some fields are missing or invalid.",
                       {"events": "Must be a list of event types."})
    if description is not None and (not isinstance(description, str) or len(description) > 200):
        raise ApiError(422, "validation_failed", "Some fields are missing or invalid.",
                       {"description": "At most 200 characters."})
    session = db_session()
    try:
        created = outhooks.create_endpoint(session, current_app.config, _lab(), url, events,
                                           description=description or "")
    except outhooks.EndpointError as exc:
        session.rollback()
        raise ApiError(422, exc.code, exc.message, {exc.field: exc.message}) from None
    audit(session, lab_id=g.lab_id, user_id=None, action="webhook_endpoint.create",
          object_type="webhook_endpoint", object_id=created.endpoint.id, ip=None,
          url=created.endpoint.url, api_key_id=g.api_key_id)
    session.commit()
    return jsonify({**outhooks.endpoint_object(created.endpoint), "secret": created.secret}), 201


@bp.delete("/webhook-endpoints/<int:endpoint_id>")
@csrf.exempt
def delete_webhook_endpoint(endpoint_id: int):
    session = db_session()
    endpoint = _endpoint_or_404(endpoint_id)
    outhooks.delete_endpoint(session, endpoint)
    audit(session, lab_id=g.lab_id, user_id=None, action="webhook_endpoint.delete",
          object_type="webhook_endpoint", object_id=endpoint.id, ip=None,
          api_key_id=g.api_key_id)
    session.commit()
    return "", 204
