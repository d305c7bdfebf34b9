"""Receipts, dead links and plain words, in Chromium as a patient and as the front desk would."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import expect
from pypdf import PdfReader

from portal.models import (
    ExchangeKind,
    LinkStatus,
    PaymentGatewayTransaction,
    PaymentStatus,
    RefundStatus,
    Role,
    utcnow,
)
from tests.browser.test_axe import audit  # noqa: F401  (the fixture)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def contact(lab, db):
    lab.address, lab.phone, lab.email = ("7 Hospital Road\nChennai 600006", "+914423456789",
                                         "desk@acme.example")
    db.commit()
    return lab


def paid_link(build, lab, **fields):
    link = build.link(lab, amount=90000, allow_partial=True, **fields)
    card = build.payment(link, amount=60000, gateway_transaction_id="txn_b_1",
                         card_brand="visa", card_last4="1881",
                         status=PaymentStatus.PARTIALLY_REFUNDED, amount_refunded=10000)
    build.payment(link, amount=30000, gateway="counter", method="upi",
                  reference="ctr_" + "b" * 24, succeeded_at=utcnow() + timedelta(minutes=3))
    build.refund(card, 10000, status=RefundStatus.SUCCEEDED, gateway_refund_id="rf_b_1")
    link.status, link.amount_paid = LinkStatus.PAID, 90000
    build.session.commit()
    return link


def test_printable_receipt_and_its_pdf(audit, live_server, build, lab, db, tmp_path):  # noqa: F811
    link = paid_link(build, contact(lab, db), patient_name="சுந்தர் ராஜன்",
                     bill_reference="B-PRINT")
    page = audit.context.new_page()
    page.goto(live_server(f"/pay/{link.token}"))
    expect(page.get_by_role("heading", name="Paid", exact=True)).to_be_visible()
    page.get_by_role("link", name="Open printable receipt").click()
    expect(page.get_by_role("heading", name="Payment receipt")).to_be_visible()
    table = page.get_by_role("table", name="Payments and refunds")
    expect(table.get_by_role("row")).to_have_count(1 + 3 + 3)  # head, 2 payments + 1 refund, totals
    expect(table).to_contain_text("-₹100.00")
    expect(page.get_by_role("region", name="Receipt").get_by_role(
        "link", name="+91 44 2345 6789")).to_have_attribute("href", "tel:+914423456789")
    expect(page.get_by_role("button", name="Print")).to_be_visible()  # shown with JavaScript
    assert audit("", page=page) == []

    page.emulate_media(media="print")
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    expect(page.get_by_role("link", name="Download PDF")).to_be_hidden()
    expect(page.get_by_role("navigation", name="Language")).to_be_hidden()
    expect(table).to_be_visible()
    page.emulate_media(media="screen")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename == "receipt-B-PRINT.pdf"
    saved = tmp_path / "receipt.pdf"
    download.value.save_as(saved)
    if os.environ.get("PORTAL_SCREENSHOTS"):  # make screenshots: the README's pictures
        page.set_viewport_size({"width": 400, "height": 800})
        page.screenshot(path=str(DOCS / "receipt.png"), full_page=True)
        if shutil.which("pdftoppm"):
            subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", str(saved),
                            str(DOCS / "receipt-pdf")], check=True)
    text = PdfReader(io.BytesIO(saved.read_bytes())).pages[0].extract_text()
    for expected in ("7 Hospital Road", "Chennai 600006", "+91 44 2345 6789",
                     "desk@acme.example", "B-PRINT", "txn_b_1", "rf_b_1", "₹600.00", "₹300.00",
                     "-₹100.00", "₹800.00"):
        assert expected in text, expected


def test_dead_links_keep_only_the_receipt_for_staff(audit, live_server, build, lab, db,  # noqa: F811
                                                    staff, sign_in):
    paid = paid_link(build, lab, bill_reference="B-DONE")
    cancelled = build.link(lab, bill_reference="B-OFF", status=LinkStatus.CANCELLED)
    page = audit.context.new_page()
    sign_in(page, staff.email)
    page.goto(live_server(f"/links/{paid.id}"))
    expect(page.get_by_text("This link is paid: the patient no longer needs it")).to_be_visible()
    for gone in ("Download QR as PNG", "Print bill slip"):
        expect(page.get_by_role("link", name=gone)).to_have_count(0)
    expect(page.get_by_label("Patient URL")).to_have_count(0)
    expect(page.get_by_role("img", name="QR code")).to_have_count(0)
    expect(page.get_by_role("link", name="Receipt as PDF")).to_be_visible()
    assert audit("", page=page) == []
    page.get_by_role("link", name="Receipt", exact=True).click()
    expect(page.get_by_role("heading", name="Payment receipt")).to_be_visible()

    page.goto(live_server(f"/links/{cancelled.id}"))
    expect(page.get_by_text("This link is cancelled")).to_be_visible()
    expect(page.get_by_role("link", name="Print bill slip")).to_have_count(0)
    response = page.goto(live_server(f"/links/{cancelled.id}/print"))
    assert response.status == 410
    assert page.goto(live_server(f"/pay/{cancelled.token}/qr.png")).status == 410


def test_patient_error_pages_name_the_lab_and_lead_back(audit, live_server, build, lab,  # noqa: F811
                                                        db):
    link = build.link(contact(lab, db), bill_reference="B-LATE")
    link.expires_at = utcnow() - timedelta(minutes=5)
    db.commit()
    page = audit.context.new_page()
    page.goto(live_server(f"/pay/{link.token}/qr.svg"))  # an old bookmark of the QR code
    expect(page.get_by_role("heading", name="This page cannot be shown")).to_be_visible()
    expect(page.get_by_text("Acme Diagnostics").first).to_be_visible()
    expect(page.get_by_role("link", name="+91 44 2345 6789")).to_have_attribute(
        "href", "tel:+914423456789")
    assert audit("", page=page) == []
    page.get_by_role("link", name="Back to the payment page").click()
    expect(page.get_by_role("heading", name="This payment link has expired")).to_be_visible()
    expect(page.get_by_text("Please call Acme Diagnostics on")).to_be_visible()
    assert audit("", page=page) == []


def test_a_declined_payment_reads_plainly_and_offers_another_try(audit, live_server,  # noqa: F811
                                                                 build, lab):
    link = build.link(lab)
    page = audit.context.new_page()
    page.goto(live_server(f"/pay/{link.token}"))
    page.get_by_role("button", name="Pay").click()
    page.get_by_role("button", name="Decline payment").click()
    expect(page.get_by_text("The payment did not go through")).to_be_visible(timeout=15_000)
    expect(page.get_by_text("Your bank declined the payment. No money was taken.")).to_be_visible()
    expect(page.get_by_text("gateway")).to_have_count(0)
    expect(page.get_by_role("link", name="Try again")).to_be_visible()


def failed_with_history(build, lab, db):
    link = build.link(lab, bill_reference="B-WORDS")
    failed = build.payment(link, status=PaymentStatus.FAILED, gateway_transaction_id="pi_raw_42",
                           failure_reason="card_declined: Your card has insufficient funds.")
    db.add(PaymentGatewayTransaction(lab_id=lab.id, gateway="sandbox",
                                     kind=ExchangeKind.WEBHOOK_RECEIVED, payment_id=failed.id,
                                     online_payment_id=link.id, event_type="payment.failed",
                                     outcome="payment failed"))
    db.commit()
    return link, failed


def test_front_desk_reads_plain_words_and_admins_open_the_details(audit, live_server,  # noqa: F811
                                                                  build, lab, db, staff,
                                                                  sign_in):
    link, failed = failed_with_history(build, lab, db)
    admin = build.user(lab, "owner@acme.test", role=Role.ADMIN)
    page = audit.context.new_page()
    sign_in(page, staff.email)
    for path in (f"/transactions/{failed.id}", f"/links/{link.id}"):
        page.goto(live_server(path))
        expect(page.get_by_text("Not enough money in the patient's account").first).to_be_visible()
        body = page.locator("main")
        for technical in ("pi_raw_42", "payment.failed", "card_declined", "webhook",
                          "Technical details"):
            expect(body).not_to_contain_text(technical)
        expect(page.get_by_text("The payment service told us the result")).to_be_visible()
        assert audit("", page=page) == []
    expect(page.get_by_text("Remaining refundable")).to_have_count(0)

    admin_page = audit.context.browser.new_context(bypass_csp=True).new_page()
    sign_in(admin_page, admin.email)
    admin_page.goto(live_server(f"/transactions/{failed.id}"))
    expect(admin_page.get_by_text("pi_raw_42")).to_be_hidden()  # folded away until asked for
    admin_page.get_by_text("Technical details").first.click()
    expect(admin_page.get_by_text("pi_raw_42")).to_be_visible()
    expect(admin_page.get_by_text("card_declined: Your card has insufficient funds.")
           ).to_be_visible()
    assert audit("", page=admin_page) == []


def test_other_changed_pages_have_no_violations(audit, live_server, build, lab, db,  # noqa: F811
                                                sign_in):
    from portal.models import Channel, Notification, OutboxStatus

    contact(lab, db)
    paid = paid_link(build, lab)
    cancelled = build.link(lab, status=LinkStatus.CANCELLED)
    db.add(Notification(lab_id=lab.id, online_payment_id=cancelled.id, channel=Channel.SMS,
                        recipient="+919876543210", template="link", status=OutboxStatus.DEAD,
                        attempts=5, last_error="PORTAL_SMS_HTTP_URL answered HTTP 503"))
    db.commit()
    for path in (f"/pay/{paid.token}", f"/pay/{cancelled.token}"):
        assert audit(live_server(path)) == [], path

    admin = build.user(lab, "owner@acme.test", role=Role.ADMIN)
    page = audit.context.new_page()
    sign_in(page, admin.email)
    page.goto(live_server("/admin/lab"))
    expect(page.get_by_label("Postal address")).to_have_value("7 Hospital Road\nChennai 600006")
    page.get_by_label("Phone for patients").fill("12")
    page.get_by_label("Email for patients").fill("nobody")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Enter a phone number patients can call")).to_be_visible()
    assert audit("", page=page) == []
    page.get_by_label("Phone for patients").fill("044 2345 6789")
    page.get_by_label("Email for patients").fill("desk@acme.example")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Nothing to save")).to_be_visible()  # the same number, re-read
    for path in ("/", f"/customers/{paid.customer_id}", f"/links/{cancelled.id}"):
        page.goto(live_server(path))
        assert audit("", page=page) == [], path
    page.goto(live_server("/"))
    expect(page.get_by_text("Not delivered after 5 tries.")).to_be_visible()
    expect(page.get_by_text("PORTAL_SMS_HTTP_URL")).to_be_hidden()  # behind the disclosure
