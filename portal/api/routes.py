"""`/payments/*` for other systems: initiate, status, refund. Bearer API key of one lab."""

from __future__ import annotations

from dataclasses import replace

from flask import Response, current_app, g, jsonify, request
from sqlalchemy import select

from gateways.base import GatewayError

from ..edge import CONTROL_IN_TEXT, MAX_ROW_ID, JsonRejected, load_json
from ..extensions import csrf, db_session, reads_only
from ..models import Lab, OnlinePayment, Payment, PaymentStatus, utcnow
from ..ratelimits import take as take_limit
from ..services import api_objects, bulk, idempotency
from ..services.api_keys import find_api_key, touch_api_key
from ..services.checkout import fetch_and_apply
from ..services.keys import configured_gateways
from ..services.links import create_link, get_link
from ..services.refunds import RefundNotAllowed, request_refund
from . import bp
from .errors import ApiError, invalid
from .openapi import document
from .validation import parse_initiate, parse_refund, require_object

MAX_BODY = 64 * 1024
MAX_BATCH_BODY = 1024 * 1024  # the app's MAX_CONTENT_LENGTH: about 1,000 full items
MAX_BATCH_ITEMS = 1000
MAX_ID = MAX_ROW_ID
IDEMPOTENCY_HEADER = "Idempotency-Key"


@bp.before_request
def authenticate():
    if request.endpoint == "api.openapi":
        return None
    limit = _body_limit()
    if (request.content_length or 0) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    scheme, _, presented = (request.headers.get("Authorization") or "").partition(" ")
    session = db_session()
    with reads_only():  # SQLite: read without taking the write lock (see below)
        key = find_api_key(session, presented.strip()) if scheme.lower() == "bearer" \
            else None
    if key is None:
        session.rollback()
        raise ApiError(401, "unauthorized", "A valid API key is required: "
                       "Authorization: Bearer <key>.", headers={"WWW-Authenticate": "Bearer"})
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has one writer at a time and its read cannot safely become a write: the read
        # ends here, and the write lock is taken at the view's first statement, after the
        # body is parsed and checked, and held only through its writes and commit.
        session.commit()
    if touch_api_key(session, key):
        session.commit()  # the use is recorded even when the request then fails
    # On PostgreSQL the transaction goes on into the view: one BEGIN and COMMIT per request.
    wait = take_limit("api", key.id)
    if wait:
        raise ApiError(429, "rate_limited", "Too many requests for this API key.",
                       headers={"Retry-After": str(wait)})
    g.api_key_id = key.id
    g.lab_id = key.lab_id
    g.lab = key.lab
    return None


def _lab() -> Lab:
    """The key's lab, read with the key (a rollback expires it, and it is read again)."""
    lab: Lab = g.lab
    return lab


@bp.errorhandler(ApiError)
def api_error(exc: ApiError):
    return exc.response()


def _body_limit() -> int:
    return MAX_BATCH_BODY if request.endpoint == "api.batch" else MAX_BODY


def _json_body():
    raw = request.get_data(cache=True)
    limit = _body_limit()
    if len(raw) > limit:
        raise ApiError(413, "payload_too_large", f"The body is larger than {limit} bytes.")
    try:
        return load_json(raw or b"null", text=CONTROL_IN_TEXT)
    except JsonRejected as exc:
        if exc.where:
            raise invalid({exc.where: "Must not contain control characters."}) from None
        raise ApiError(400, "invalid_json", exc.message) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None


def idempotent(view):
    """Replays the first answer for a repeated Idempotency-Key with the same body."""
    def wrapper(*args, **kwargs):
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 0 < len(key) <= 255 or not key.isprintable():
            raise ApiError(400, "invalid_idempotency_key",
                           "Idempotency-Key must be 1 to 255 printable characters.")
        session = db_session()
        print_ = idempotency.fingerprint(request.method, request.path,
                                         request.get_data(cache=True))
        try:
            stored = idempotency.begin(session, g.lab_id, key, print_)
        except idempotency.KeyReused:
            raise ApiError(422, "idempotency_key_reused", "This Idempotency-Key was used with "
                           "a different request.") from None
        except idempotency.KeyInFlight:
            raise ApiError(409, "idempotency_key_in_flight", "A request with this "
                           "Idempotency-Key is still being processed.") from None
        if stored is not None:
            response = Response(stored.body, stored.status, mimetype="application/json")
            response.headers["Idempotent-Replayed"] = "true"
            return response
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except ApiError as exc:
            response = exc.response()
        except Exception:
            idempotency.abandon(session, g.lab_id, key)
            raise
        if response.status_code >= 500:
            idempotency.abandon(session, g.lab_id, key)
        else:
            session.rollback()
            idempotency.finish(session, g.lab_id, key, response.status_code,
                               response.get_data(as_text=True))
        return response
    wrapper.__name__ = view.__name__
    return wrapper


def link_json(link: OnlinePayment) -> dict:
    return api_objects.link_object(link, current_app.config["PORTAL_BASE_URL"])


refund_json = api_objects.refund_object
payment_json = api_objects.payment_object


@bp.post("/payments/initiate")
@csrf.exempt
@idempotent
def initiate():
    body = _json_body()
    session = db_session()
    lab = _lab()
    configured = _gateways_for(session, lab, body)
    data, metadata = parse_initiate(body, lab=lab, gateways=configured, now=utcnow())
    if data.gateway is None and lab.default_gateway not in configured:
        raise ApiError(422, "gateway_not_configured",
                       "The lab has no payment gateway set up yet.")
    link = create_link(session, lab, replace(data, metadata=metadata), user_id=None)
    session.commit()
    current_app.logger.info("API key %s created link %s", g.api_key_id, link.id)
    return jsonify(link_json(link)), 201


def _gateways_for(session, lab: Lab, body) -> set[str]:
    """The lab's gateways an initiate body can use. Only a body that names one needs them
    all read; for the default, whether it is set up came with the API key."""
    named = body.get("gateway") if isinstance(body, dict) else None
    if named is None and lab.default_gateway_ready is not None:
        return {lab.default_gateway} if lab.default_gateway_ready else set()
    return configured_gateways(session, lab.id)


@bp.post("/payments/batch")
@csrf.exempt
@idempotent
def batch():
    """Many initiate bodies at once: every item checked first, then all created or none."""
    body = require_object(_json_body())
    items = body.get("items")
    unknown = sorted(set(body) - {"items"})
    if unknown:
        raise invalid({name[:100]: "Unknown field." for name in unknown})
    if not isinstance(items, list) or not items:
        raise invalid({"items": "Required: a list of initiate bodies."})
    if len(items) > MAX_BATCH_ITEMS:
        raise invalid({"items": f"At most {MAX_BATCH_ITEMS} items in one batch."})
    session = db_session()
    lab = _lab()
    configured = configured_gateways(session, lab.id)
    now = utcnow()
    parsed, problems = [], []
    for index, item in enumerate(items):
        try:
            parsed.append(parse_initiate(item, lab=lab, gateways=configured, now=now))
        except ApiError as exc:
            problems.append({"index": index, "code": exc.code, "message": exc.message,
                             **({"fields": exc.fields} if exc.fields else {})})
            parsed.append(None)
    references = [p[0].bill_reference if p else None for p in parsed]
    for index, first in bulk.duplicate_references(references).items():
        problems.append({"index": index, "code": "duplicate_bill_reference",
                         "message": f"The same bill_reference as item {first}.",
                         "fields": {"bill_reference": f"Also in item {first}."}})
    if problems:
        raise ApiError(422, "validation_failed", "Some items are invalid; nothing was "
                       "created.", items=sorted(problems, key=lambda p: p["index"]))
    if lab.default_gateway not in configured and any(p[0].gateway is None for p in parsed):
        raise ApiError(422, "gateway_not_configured",
                       "The lab has no payment gateway set up yet.")
    links = bulk.create_many(session, lab, [p[0] for p in parsed], user_id=None)
    for link, (_, metadata) in zip(links, parsed, strict=True):
        link.metadata_json = metadata
    session.commit()
    current_app.logger.info("API key %s created %s links in a batch", g.api_key_id, len(links))
    return jsonify(items=[link_json(link) for link in links]), 201


@bp.get("/payments/status/<int:link_id>")
def status(link_id: int):
    session = db_session()
    link = get_link(session, g.lab_id, link_id) if link_id <= MAX_ID else None
    if link is None:
        raise ApiError(404, "not_found", "No payment link with this id.")
    if request.args.get("refresh", "false").lower() not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_parameter", "refresh must be true or false.")
    if request.args.get("refresh", "false").lower() in ("true", "1"):
        pending = [p.id for p in link.payments if p.status == PaymentStatus.PENDING]
        session.commit()
        for payment_id in pending:  # the same path reconciliation uses
            try:
                fetch_and_apply(session, current_app.config, payment_id)
            except GatewayError as exc:
                session.rollback()
                current_app.logger.warning("API refresh of payment %s: %s", payment_id,
                                           exc.code)
        link = get_link(session, g.lab_id, link_id)
    return jsonify(api_objects.status_object(link, current_app.config["PORTAL_BASE_URL"]))


@bp.post("/payments/refund")
@csrf.exempt
@idempotent
def refund():
    session = db_session()
    payment_id, amount, reason = parse_refund(_json_body())
    payment = session.scalar(select(Payment).where(Payment.id == payment_id,
                                                   Payment.lab_id == g.lab_id))
    if payment is None:
        raise ApiError(404, "not_found", "No payment with this id.")
    try:
        refund = request_refund(session, current_app.config, payment.id, amount, reason,
                                user_id=None)
    except RefundNotAllowed as exc:
        session.rollback()
        raise ApiError(422, "refund_not_allowed", str(exc)) from None
    return jsonify(refund_json(refund)), 201


@bp.get("/openapi.json")
def openapi():
    return jsonify(document(current_app.config["PORTAL_BASE_URL"]))
