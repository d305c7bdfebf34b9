"""The sandbox gateway's hosted page and API, served by the portal for demos and tests."""

import json
import time
from datetime import UTC, datetime

from flask import abort, current_app, jsonify, redirect, render_template, request

from gateways import sandbox as wire
from gateways.base import SignatureError

from ..extensions import csrf, db_session
from ..models import SandboxCharge
from ..services import sandbox as server
from . import bp


def _merchant(reference: str) -> server.Merchant:
    try:
        return server.merchant_for(db_session(), current_app.config["PORTAL_ENCRYPTION_KEYS"],
                                   reference)
    except server.SandboxError as exc:
        abort(exc.status, exc.message)


def _checkout(reference: str, args) -> tuple[server.Merchant, dict[str, str]]:
    merchant = _merchant(reference)
    try:
        params = wire.verify_checkout_query(merchant.secret, args)
    except SignatureError:
        abort(400, "This checkout link is not valid.")
    return merchant, params


@bp.get("/sandbox/checkout/<reference>")
def checkout(reference: str):
    _merchant_, params = _checkout(reference, request.args)
    expired = int(params["expires"]) <= time.time()
    charge = db_session().get(SandboxCharge, reference)
    return render_template("sandbox/checkout.html", reference=reference, params=params,
                           amount=int(params["amount"]), expired=expired, charge=charge,
                           query=request.query_string.decode(),
                           expires=datetime.fromtimestamp(int(params["expires"]), UTC))


@bp.post("/sandbox/checkout/<reference>")
def decide(reference: str):
    merchant, params = _checkout(reference, request.args)
    if int(params["expires"]) <= time.time():
        abort(410, "This checkout has expired.")
    outcome = request.form.get("outcome")
    if outcome not in ("pay", "decline"):
        abort(400, "Choose to pay or to decline.")
    session = db_session()
    server.record_outcome(session, merchant, reference, params, succeeded=outcome == "pay")
    session.commit()
    return redirect(params["return_url"], 303)


def _verify_api_call(reference: str, payload: bytes) -> None:
    merchant = _merchant(reference)
    try:
        wire.verify_signature(merchant.secret, payload,
                              request.headers.get(wire.SIGNATURE_HEADER))
    except SignatureError:
        abort(401, "Bad or missing Sandbox-Signature.")


@bp.get("/sandbox/api/checkouts/<reference>")
@csrf.exempt
def api_status(reference: str):
    _verify_api_call(reference, request.path.removeprefix("/sandbox").encode())
    return jsonify(reference=reference,
                   **server.status_answer(db_session().get(SandboxCharge, reference)))


@bp.post("/sandbox/api/refunds")
@csrf.exempt
def api_refund():
    raw = request.get_data()
    try:
        body = json.loads(raw)
        reference, amount, key = str(body["reference"]), int(body["amount"]), \
            str(body["idempotency_key"])
    except (ValueError, KeyError, TypeError):
        return jsonify(error={"code": "invalid_request", "message": "Malformed refund."}), 400
    _verify_api_call(reference, raw)
    session = db_session()
    try:
        answer = server.refund(session, reference, amount, key)
    except server.SandboxError as exc:
        session.rollback()
        return jsonify(error={"code": "refund_refused", "message": exc.message}), exc.status
    session.commit()
    return jsonify(answer)
