import json
import time

from sqlalchemy import func, select

from gateways import sandbox
from portal.models import LinkStatus, Payment, PaymentGatewayTransaction, PaymentStatus
from tests.web.helpers import post_event, start_payment


def exchanges(db, kind="webhook_received"):
    return db.scalars(select(PaymentGatewayTransaction)
                      .where(PaymentGatewayTransaction.kind == kind)).all()


def test_signed_webhook_marks_the_link_paid(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    response = post_event(client, reference, event_id="evt_one")
    assert response.status_code == 200 and response.get_json() == {"received": True,
                                                                    "duplicate": False}
    db.refresh(link)
    payment = db.scalar(select(Payment))
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450
    assert payment.status == PaymentStatus.SUCCEEDED and payment.gateway_transaction_id
    [exchange] = exchanges(db)
    assert (exchange.event_id, exchange.signature_valid, exchange.outcome) == \
        ("evt_one", True, "payment succeeded; link paid")


def test_duplicate_is_2xx_and_changes_nothing(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    post_event(client, reference, event_id="evt_dup")
    again = post_event(client, reference, event_id="evt_dup")
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    db.refresh(link)
    assert link.amount_paid == 123450
    first, again = exchanges(db)  # the duplicate is kept for the inbox, under no event id
    assert (first.event_id, again.event_id) == ("evt_dup", None)
    assert again.payload == {"duplicate_of": "evt_dup"} and again.online_payment_id == link.id
    assert again.outcome == "duplicate of evt_dup: ignored"


def test_bad_signature_is_400_and_changes_nothing(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    response = post_event(client, reference, secret="whsec_wrong")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_signature"
    db.refresh(link)
    assert link.status == LinkStatus.CREATED and exchanges(db) == []


def test_stale_timestamp_is_refused(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    response = post_event(client, reference, timestamp=int(time.time()) - 301)
    assert response.status_code == 400 and exchanges(db) == []


def test_tampered_body_is_refused(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    body = sandbox.build_event("evt_t", True, reference, 1, "INR")
    header = sandbox.sign("whsec_test_sandbox", body, int(time.time()))
    forged = body.replace(b'"amount":1', b'"amount":123450')
    assert post_event(client, reference, body=forged, header=header).status_code == 400
    assert exchanges(db) == []


def test_missing_signature_header(client, build, lab):
    link = build.link(lab)
    reference = start_payment(client, link)
    body = sandbox.build_event("evt_n", True, reference, 123450, "INR")
    response = client.post("/payments/webhook/sandbox", data=body)
    assert response.status_code == 400


def test_malformed_body_and_unknown_reference_and_gateway(client, build, lab):
    assert post_event(client, "x", body=b"{not json", header="t=1,v1=x").status_code == 400
    unknown = post_event(client, "pay_unknown")
    assert unknown.status_code == 400
    assert unknown.get_json()["error"]["code"] == "unknown_reference"
    assert client.post("/payments/webhook/paypal", data=b"{}").status_code == 400


def test_other_labs_secret_cannot_sign_for_this_lab(client, build, lab, db):
    build.lab("mallory", sandbox_secret="whsec_mallory")
    link = build.link(lab)
    reference = start_payment(client, link)
    assert post_event(client, reference, secret="whsec_mallory").status_code == 400


def test_amount_mismatch_is_not_marked_paid(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    assert post_event(client, reference, amount=100).status_code == 200
    db.refresh(link)
    payment = db.scalar(select(Payment))
    assert link.status == LinkStatus.CREATED and payment.status == PaymentStatus.PENDING
    assert link.needs_attention and "expected 123450 INR" in link.attention_reason
    assert post_event(client, reference, currency="USD").status_code == 200
    assert db.scalar(select(Payment)).status == PaymentStatus.PENDING


def test_money_for_a_cancelled_link_is_recorded_and_flagged(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    link.status = LinkStatus.CANCELLED
    db.commit()
    assert post_event(client, reference).status_code == 200
    db.refresh(link)
    payment = db.scalar(select(Payment))
    assert payment.status == PaymentStatus.SUCCEEDED and link.amount_paid == 123450
    assert link.status == LinkStatus.CANCELLED  # terminal states never go back
    assert link.needs_attention and link.attention_reason == "Paid after the link was cancelled."


def test_decline_then_success_on_the_same_checkout(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    post_event(client, reference, succeeded=False)
    assert db.scalar(select(Payment)).status == PaymentStatus.FAILED
    post_event(client, reference, succeeded=True)
    db.refresh(link)
    assert db.scalar(select(Payment)).status == PaymentStatus.SUCCEEDED
    assert link.status == LinkStatus.PAID


def test_late_failure_after_success_is_ignored(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    post_event(client, reference, succeeded=True)
    post_event(client, reference, succeeded=False)
    assert db.scalar(select(Payment)).status == PaymentStatus.SUCCEEDED
    outcomes = [x.outcome for x in exchanges(db)]
    assert "ignored as out of order: the payment already succeeded" in outcomes


def test_partial_payment(client, build, lab, db):
    link = build.link(lab, allow_partial=True)
    reference = start_payment(client, link)
    payment = db.scalar(select(Payment))
    # a part payment is a payment for less than the link: 500.00 of 1,234.50
    payment.amount = 50000
    db.commit()
    post_event(client, reference, amount=50000)
    db.refresh(link)
    assert link.status == LinkStatus.PARTIALLY_PAID and link.outstanding == 73450
    second = start_payment(client, link)
    assert db.get(Payment, 2).amount == 73450
    post_event(client, second, amount=73450)
    db.refresh(link)
    assert link.status == LinkStatus.PAID and link.amount_paid == 123450


def test_payload_is_stored_raw(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    post_event(client, reference, event_id="evt_raw")
    [exchange] = exchanges(db)
    assert exchange.payload["data"]["reference"] == reference
    assert json.dumps(exchange.payload).count("whsec") == 0
    assert db.scalar(select(func.count()).select_from(PaymentGatewayTransaction)) == 2
