"""The floor for the write benchmarks: a bare Flask app doing only the database work a webhook
and an initiate cannot do without, as hand-written SQL through SQLAlchemy Core on the portal's
own schema and engine (SQLite's write-lock BEGIN included). No ORM, no hooks, no logs, no
metrics, no audit, no checks beyond the signature. Not a product: the ceiling that any
implementation of these two requests meets on this machine (bench/http_bench.py --only floor).

Webhook: verify, then one transaction: lock the payment and its link, record the exchange
(ON CONFLICT: the dedupe), mark both paid, queue the receipt, commit.
Initiate: find the API key's lab, add the patient and the link, commit.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from datetime import timedelta

from flask import Flask, request
from sqlalchemy import text

from gateways import sandbox
from portal.extensions import make_engine
from portal.models import utcnow
from portal.services.api_keys import KEY_FORMAT, hash_key

app = Flask("floor")
engine = make_engine(os.environ["PORTAL_DATABASE_URL"])
LOCK = " FOR UPDATE OF p, l" if engine.dialect.name == "postgresql" else ""
SECRET = os.environ.get("BENCH_WEBHOOK_SECRET", "whsec_bench")  # nosec B105

FIND = text("SELECT p.id, p.lab_id, l.id FROM payments p JOIN online_payments l"
            " ON l.id = p.online_payment_id WHERE p.reference = :reference" + LOCK)
RECORD = text("INSERT INTO payment_gateway_transactions (lab_id, gateway, kind,"
              " online_payment_id, payment_id, event_id, event_type, signature_valid, success,"
              " outcome, payload, created_at) VALUES (:lab, 'sandbox', 'webhook_received', :link,"
              " :payment, :event, :type, true, true, 'applied', :payload, :now)"
              " ON CONFLICT (gateway, event_id) DO NOTHING RETURNING id")
PAY = text("UPDATE payments SET status = 'succeeded', succeeded_at = :now, updated_at = :now,"
           " gateway_transaction_id = :txn WHERE id = :payment")
PAID = text("UPDATE online_payments SET status = 'paid', amount_paid = amount, paid_at = :now,"
            " updated_at = :now WHERE id = :link")
RECEIPT = text("INSERT INTO notifications (lab_id, online_payment_id, channel, recipient,"
               " template, status, attempts, next_attempt_at, created_at, dedupe_key)"
               " VALUES (:lab, :link, 'email', 'patient@example.com', 'receipt', 'queued', 0,"
               " :now, :now, :dedupe) ON CONFLICT DO NOTHING")
KEY = text("SELECT lab_id, key_hash FROM api_keys WHERE prefix = :prefix")
PATIENT = text("INSERT INTO customers (lab_id, name, phone, created_at, updated_at)"
               " VALUES (:lab, :name, :phone, :now, :now) RETURNING id")
LINK = text("INSERT INTO online_payments (lab_id, token, amount, currency, amount_paid,"
            " bill_reference, description, customer_id, gateway, status, expires_at,"
            " allow_partial, metadata, needs_attention, created_at, updated_at, patient_name,"
            " patient_phone) VALUES (:lab, :token, :amount, :currency, 0, :bill, :description,"
            " :customer, 'sandbox', 'created', :expires, false, '{}', false, :now, :now, :name,"
            " :phone) RETURNING id")


@app.post("/payments/webhook/sandbox")
def webhook():
    raw = request.get_data()
    sandbox.verify_signature(SECRET, raw, request.headers.get("Sandbox-Signature"))
    body = json.loads(raw)
    event = sandbox.parse_event(body)
    now = utcnow().replace(tzinfo=None)
    with engine.begin() as conn:
        payment, lab, link = conn.execute(FIND, {"reference": event.reference}).one()
        if conn.execute(RECORD, {"lab": lab, "link": link, "payment": payment,
                                 "event": event.dedupe_id, "type": event.type,
                                 "payload": raw.decode(), "now": now}).first() is None:
            return "duplicate"
        conn.execute(PAY, {"now": now, "txn": event.transaction_id, "payment": payment})
        conn.execute(PAID, {"now": now, "link": link})
        conn.execute(RECEIPT, {"lab": lab, "link": link, "now": now,
                               "dedupe": f"receipt:{payment}"})
    return "ok"


@app.post("/payments/initiate")
def initiate():
    key = KEY_FORMAT.fullmatch(request.headers.get("Authorization", "").removeprefix("Bearer "))
    if key is None:
        return "unauthorized", 401
    body = json.loads(request.get_data())
    patient = body["customer"]
    now = utcnow().replace(tzinfo=None)
    with engine.begin() as conn:
        lab, key_hash = conn.execute(KEY, {"prefix": key[1]}).one()
        if not hmac.compare_digest(key_hash, hash_key(key[0])):
            return "unauthorized", 401
        customer = conn.execute(PATIENT, {"lab": lab, "name": patient["name"],
                                          "phone": patient["phone"], "now": now}).scalar_one()
        link = conn.execute(LINK, {
            "lab": lab, "token": secrets.token_urlsafe(24), "amount": body["amount"],
            "currency": body["currency"], "bill": body["bill_reference"],
            "description": body["description"], "customer": customer,
            "expires": now + timedelta(days=3), "now": now, "name": patient["name"],
            "phone": patient["phone"]}).scalar_one()
    return json.dumps({"id": link}), 201
