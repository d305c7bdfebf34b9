"""`POST /payments/webhook/<gateway>`: authenticated by the gateway's signature, not a login."""

from flask import current_app, jsonify, request

from ..extensions import csrf, db_session
from ..services.webhooks import WebhookRejected, receive_webhook
from . import bp


@bp.post("/payments/webhook/<gateway>")
@csrf.exempt
def receive(gateway: str):
    session = db_session()
    try:
        received = receive_webhook(session, current_app.config, gateway,
                                   request.headers, request.get_data(cache=False))
    except WebhookRejected as exc:
        session.rollback()
        return jsonify(error={"code": exc.code, "message": exc.message}), 400
    session.commit()
    return jsonify(received=True, duplicate=received.applied.duplicate), 200
