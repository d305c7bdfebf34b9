"""`POST /payments/webhook/<gateway>`: authenticated by the gateway's signature, not a login."""

from flask import Response, current_app, jsonify, request

from gateways import GATEWAYS
from gateways.base import IgnoredEvent

from ..extensions import csrf, db_session
from ..metrics import WEBHOOKS
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
        WEBHOOKS.labels(_known(gateway), exc.code).inc()
        return jsonify(error={"code": exc.code, "message": exc.message}), exc.status
    except IgnoredEvent as exc:  # acknowledged so the gateway stops retrying; nothing changes
        session.rollback()
        WEBHOOKS.labels(gateway, "ignored").inc()
        return _ack(gateway) or (jsonify(received=True, ignored=exc.message), 200)
    session.commit()
    WEBHOOKS.labels(gateway, "duplicate" if received.applied.duplicate else "applied").inc()
    return _ack(gateway) or (jsonify(received=True, duplicate=received.applied.duplicate), 200)


def _known(gateway: str) -> str:
    """A label from the URL only when it names a gateway: scanners must not add series."""
    return gateway if gateway in GATEWAYS else "unknown"


def _ack(gateway: str) -> Response | None:
    """The exact answer a gateway expects (PesoPay wants the text `OK`), if it has one."""
    cls = GATEWAYS.get(gateway)
    if cls is None or cls.webhook_ack is None:
        return None
    body, mimetype = cls.webhook_ack
    return Response(body, 200, mimetype=mimetype)
