"""`POST /payments/webhook/<gateway>`: authenticated by the gateway's signature, not a login."""

from flask import Response, current_app, jsonify, request

from gateways import GATEWAYS
from gateways.base import IgnoredEvent

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
        return jsonify(error={"code": exc.code, "message": exc.message}), exc.status
    except IgnoredEvent as exc:  # acknowledged so the gateway stops retrying; nothing changes
        session.rollback()
        return _ack(gateway) or (jsonify(received=True, ignored=exc.message), 200)
    session.commit()
    return _ack(gateway) or (jsonify(received=True, duplicate=received.applied.duplicate), 200)


def _ack(gateway: str) -> Response | None:
    """The exact answer a gateway expects (PesoPay wants the text `OK`), if it has one."""
    cls = GATEWAYS.get(gateway)
    if cls is None or cls.webhook_ack is None:
        return None
    body, mimetype = cls.webhook_ack
    return Response(body, 200, mimetype=mimetype)
