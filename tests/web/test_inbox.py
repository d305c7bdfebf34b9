"""The admins' webhook inbox: verdicts, the lab's own entries only, and "Fetch status now"."""

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.models import ExchangeKind, LinkStatus, Payment, PaymentGatewayTransaction, utcnow
from portal.services.events import record_exchange
from tests.conftest import csrf_from, serving
from tests.web.helpers import post_event, start_payment


def rows(page: str) -> list[str]:
    """The text of each row of the "Received" table, tags stripped."""
    table = page.split('id="received-heading"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def test_staff_cannot_see_it(staff_client):
    assert staff_client.get("/admin/webhooks").status_code == 403


def test_verdicts_new_duplicate_and_out_of_order(admin_client, client, build, lab, db):
    link = build.link(lab, bill_reference="B-INBOX")
    reference = start_payment(client, link)
    post_event(client, reference, event_id="evt_first")
    post_event(client, reference, event_id="evt_first")  # the gateway retried
    post_event(client, reference, event_id="evt_late", succeeded=False)  # an older decline

    page = admin_client.get("/admin/webhooks").get_data(as_text=True)

    late, duplicate, first = rows(page)  # newest first
    for row in (late, duplicate, first):
        assert "sandbox" in row and "Webhook" in row and "Verified" in row and "B-INBOX" in row
    assert "evt_first" in first and "New" in first and "payment succeeded; link paid" in first
    assert "Duplicate" in duplicate and "duplicate of evt_first: ignored" in duplicate
    assert "Ignored as out of order" in late and "payment.failed" in late
    assert f'href="/links/{link.id}"' in page


def test_status_polls_are_listed_as_unsigned_and_checkouts_are_not(admin_client, client,
                                                                   build, lab, db):
    link = build.link(lab)
    start_payment(client, link)  # a checkout_created exchange: not an inbox entry
    payment = db.scalar(select(Payment))
    record_exchange(db, lab_id=lab.id, gateway="sandbox", kind=ExchangeKind.STATUS_FETCHED,
                    payment=payment, event_type="status.open", signature_valid=None,
                    outcome="no change: still pending at the gateway")
    db.commit()
    [poll] = rows(admin_client.get("/admin/webhooks").get_data(as_text=True))
    assert "Status poll" in poll and "Not signed (our own request)" in poll
    assert "no change: still pending at the gateway" in poll


def test_only_the_labs_own_entries_and_payments(admin_client, client, build, lab, db):
    other = build.lab("other", name="Other Labs", sandbox_secret="whsec_other")
    theirs = build.link(other, bill_reference="THEIRS")
    their_reference = start_payment(client, theirs)
    post_event(client, their_reference, secret="whsec_other", event_id="evt_theirs")
    build.link(other, bill_reference="THEIRS-PENDING")
    their_pending = start_payment(client, build.link(other, bill_reference="THEIRS-OPEN"))

    page = admin_client.get("/admin/webhooks").get_data(as_text=True)
    assert "THEIRS" not in page and "evt_theirs" not in page and their_pending not in page
    assert "Nothing received from a gateway yet." in page
    assert "No payment is waiting for its gateway." in page
    # Nor can their payment be fetched from here.
    payment = db.scalar(select(Payment).where(Payment.reference == their_pending))
    response = admin_client.post(f"/admin/payments/{payment.id}/fetch-status",
                                 data={"csrf_token": csrf_from(page)})
    assert response.status_code == 404


def test_keyset_pages(admin_client, build, lab, db):
    link = build.link(lab)
    for n in range(55):
        record_exchange(db, lab_id=lab.id, gateway="sandbox", kind=ExchangeKind.WEBHOOK_RECEIVED,
                        link_id=link.id, event_id=f"evt_{n:03}", event_type="payment.failed",
                        outcome="payment failed")
    db.commit()
    first = admin_client.get("/admin/webhooks").get_data(as_text=True)
    assert len(rows(first)) == 50 and "evt_054" in first and "evt_004" not in first
    older = re.search(r'href="(/admin/webhooks\?before=\d+)"', first).group(1)
    second = admin_client.get(older).get_data(as_text=True)
    assert len(rows(second)) == 5 and "evt_004" in second and "evt_005" not in second
    assert "Older entries" not in second and "Newest" in second


def test_fetch_status_now_needs_csrf(admin_client, client, build, lab, db):
    start_payment(client, build.link(lab))
    payment = db.scalar(select(Payment))
    assert admin_client.post(f"/admin/payments/{payment.id}/fetch-status").status_code == 400


def test_fetch_status_now_says_clearly_when_the_gateway_is_unreachable(admin_client, client,
                                                                        build, lab, db, app):
    start_payment(client, build.link(lab))
    app.config["PORTAL_BASE_URL"] = "http://127.0.0.1:9"  # the sandbox's API: nobody there
    page = admin_client.get("/admin/webhooks").get_data(as_text=True)
    payment = db.scalar(select(Payment))
    assert f"Fetch status now<span class=\"visually-hidden\"> for {payment.reference}" in page
    response = admin_client.post(f"/admin/payments/{payment.id}/fetch-status",
                                 data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert f"Could not ask the gateway about {payment.reference}:" in page
    assert 'class="alert alert--error"' in page
    assert db.scalar(select(Payment)).status == "pending"
    [failed] = db.scalars(select(PaymentGatewayTransaction).where(
        PaymentGatewayTransaction.kind == ExchangeKind.STATUS_FETCHED)).all()
    assert failed.success is False and "Not applied" in page


@pytest.fixture
def live(app):
    with serving(app) as url:
        yield url


def test_fetch_status_now_closes_a_link_whose_webhook_was_lost(admin_client, live, build, lab,
                                                               db):
    from tests.gateways.test_sandbox_http import choose, press_pay

    link = build.link(lab, expires_at=utcnow() + timedelta(hours=1))
    browser, checkout_url = press_pay(live, link.token)
    choose(browser, checkout_url, "pay")  # the webhook job is queued, and never run here
    payment = db.scalar(select(Payment))
    page = admin_client.get("/admin/webhooks").get_data(as_text=True)
    response = admin_client.post(f"/admin/payments/{payment.id}/fetch-status",
                                 data={"csrf_token": csrf_from(page)}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert f"Asked the gateway about {payment.reference}: payment succeeded; link paid." in page
    db.refresh(link)
    assert link.status == LinkStatus.PAID
    assert "No payment is waiting for its gateway." in page
