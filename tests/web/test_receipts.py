"""Receipts (page and PDF), the lab's contact details, dead links and plain failure words."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import timedelta

import pytest
from pypdf import PdfReader

from portal.filters import failure_kind
from portal.models import LinkStatus, PaymentStatus, RefundStatus, utcnow
from tests.conftest import csrf_from
from tests.web.helpers import static_name

ADDRESS = "12 MG Road\nIndiranagar, Bengaluru 560038"


@pytest.fixture
def contact_lab(lab, db):
    lab.address, lab.phone, lab.email = ADDRESS, "+918045678900", "billing@acme.example"
    db.commit()
    return lab


def paid_twice_refunded_once(build, lab, **link_fields):
    """A part-paid link (online by card, then at the desk), with one refund of the first."""
    link = build.link(lab, amount=150000, allow_partial=True, **link_fields)
    card = build.payment(link, amount=100000, gateway_transaction_id="txn_card_1",
                         card_brand="visa", card_last4="4242",
                         status=PaymentStatus.PARTIALLY_REFUNDED, amount_refunded=25000)
    build.payment(link, amount=50000, gateway="counter", method="cash",
                  reference="ctr_" + "a" * 24, succeeded_at=utcnow() + timedelta(minutes=5))
    build.refund(card, 25000, status=RefundStatus.SUCCEEDED, gateway_refund_id="rf_9")
    build.payment(link, amount=150000, status=PaymentStatus.FAILED,
                  failure_reason="Insufficient funds")
    link.status, link.amount_paid = LinkStatus.PAID, 150000
    build.session.commit()
    return link


def pdf_text(data: bytes) -> str:
    """The PDF's text as poppler's pdftotext reads it (pypdf where poppler is missing)."""
    assert data.startswith(b"%PDF-")
    if shutil.which("pdftotext"):
        return subprocess.run(["pdftotext", "-enc", "UTF-8", "-", "-"], input=data,
                              capture_output=True, check=True).stdout.decode()
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_receipt_page_names_patient_lab_and_every_payment_and_refund(client, build,
                                                                     contact_lab):
    link = paid_twice_refunded_once(build, contact_lab, patient_name="Ravi Kumar",
                                    bill_reference="B-RCPT")
    response = client.get(f"/pay/{link.token}/receipt")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    for text in ("Ravi Kumar", "Acme Diagnostics", "12 MG Road",
                 "Indiranagar, Bengaluru 560038", 'href="tel:+918045678900"', "+91 80 4567 8900",
                 'href="mailto:billing@acme.example"', "B-RCPT", "₹1,500.00",
                 "card ending", "txn_card_1", "Paid at the lab", "Refund", "rf_9",
                 "-₹250.00", "₹1,000.00", "₹500.00", "Total paid", "Net paid", "₹1,250.00",
                 f'href="/pay/{link.token}/receipt.pdf"', static_name("receipt.css"),
                 "data-print hidden>Print</button>"):
        assert text in page, text
    assert "Insufficient funds" not in page  # a failed attempt is no part of a receipt
    css = client.get("/static/receipt.css").get_data(as_text=True)
    assert "@media print" in css and ".receipt__actions" in css


def test_receipt_pdf_is_a_real_pdf_with_everything_on_it(client, build, contact_lab):
    link = paid_twice_refunded_once(build, contact_lab, patient_name="Ravi Kumar",
                                    bill_reference="B-PDF")
    response = client.get(f"/pay/{link.token}/receipt.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == 'attachment; filename="receipt-B-PDF.pdf"'
    reader = PdfReader(io.BytesIO(response.data))
    assert len(reader.pages) == 1
    text = pdf_text(response.data)
    for expected in ("Payment receipt", "Ravi Kumar", "Acme Diagnostics", "12 MG Road",
                     "Indiranagar, Bengaluru 560038", "+91 80 4567 8900",
                     "billing@acme.example", "B-PDF", "₹1,500.00", "Visa card ending 4242",
                     "txn_card_1", "Paid at the lab", "Refund", "rf_9", "-₹250.00", "₹1,000.00",
                     "₹500.00", "Total paid", "Net paid", "₹1,250.00"):
        assert expected in text, expected


def test_receipt_pdf_in_hindi_with_a_hindi_name(client, build, contact_lab):
    link = paid_twice_refunded_once(build, contact_lab, patient_name="लक्ष्मी कुमार",
                                    language="hi")
    response = client.get(f"/pay/{link.token}/receipt.pdf")
    text = pdf_text(response.data)
    for expected in ("लक्ष्मी कुमार", "शुद्ध भुगतान", "कुल भुगतान", "₹1,000.00", "-₹250.00",
                     "फ़ोन: +91 80 4567 8900"):
        assert expected in text, expected
    fonts = {str(font) for page in PdfReader(io.BytesIO(response.data)).pages
             for font in page["/Resources"]["/Font"].values()}
    assert fonts  # embedded subsets, not a base-14 font without Devanagari


@pytest.mark.parametrize("language,name,words", [
    ("ta", "லட்சுமி", ["கட்டண ரசீது"]),
    ("zh-Hant", "陳大文", ["付款收據", "退款"]),
    ("ar", "ليلى حسن", ["استرداد"]),
])
def test_receipt_pdf_in_other_scripts(client, build, contact_lab, language, name, words):
    link = paid_twice_refunded_once(build, contact_lab, patient_name=name, language=language)
    response = client.get(f"/pay/{link.token}/receipt.pdf")
    assert response.status_code == 200
    text = pdf_text(response.data)
    assert "₹" in text and "txn_card_1" in text
    if language != "ar":  # Arabic comes out shaped; extraction reorders it, so it is not compared
        for word in [name, *words]:
            assert word in text, word


def test_no_receipt_before_money_arrives(client, build, lab):
    link = build.link(lab)
    assert client.get(f"/pay/{link.token}/receipt").status_code == 404
    assert client.get(f"/pay/{link.token}/receipt.pdf").status_code == 404


def test_lab_contact_settings_are_checked_and_saved(admin_client, lab, db):
    page = admin_client.get("/admin/lab").get_data(as_text=True)
    form = {"csrf_token": csrf_from(page), "name": lab.name, "currency": "INR",
            "timezone": "Asia/Kolkata", "locale": "en_IN", "default_language": "en",
            "default_expiry_hours": "72", "reminder_hours": "", "refund_threshold": "",
            "refund_reasons": "", "brand_color": ""}
    bad = admin_client.post("/admin/lab", data={**form, "phone": "12", "email": "nope",
                                                "address": "\n".join(["x"] * 7)})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "Enter a phone number patients can call" in text
    assert "Enter an email address" in text and "at most 6 lines" in text
    good = admin_client.post("/admin/lab", data={
        **form, "phone": "080 4567 8900", "email": " Billing@Acme.example ",
        "address": "  12  MG Road \n\n Bengaluru  "})
    assert good.status_code == 303
    db.refresh(lab)
    assert (lab.phone, lab.email, lab.address) == ("+918045678900", "billing@acme.example",
                                                   "12 MG Road\nBengaluru")


def test_expired_and_cancelled_pages_give_the_labs_phone(client, build, contact_lab, db):
    expired = build.link(contact_lab)
    expired.expires_at = utcnow() - timedelta(hours=1)
    db.commit()
    cancelled = build.link(contact_lab, status=LinkStatus.CANCELLED)
    for link in (expired, cancelled):
        page = client.get(f"/pay/{link.token}").get_data(as_text=True)
        assert 'href="tel:+918045678900"' in page and "+91 80 4567 8900" in page
        assert "contact the lab" not in page


def test_a_failed_payment_is_told_in_plain_words(client, build, lab):
    link = build.link(lab)
    payment = build.payment(link, status=PaymentStatus.FAILED,
                            failure_reason="declined at the gateway")
    page = client.get(f"/pay/{link.token}/return?ref={payment.reference}").get_data(as_text=True)
    assert "Your bank declined the payment. No money was taken." in page
    assert "declined at the gateway" not in page


@pytest.mark.parametrize("reason,kind", [
    ("Insufficient funds", "insufficient_funds"),
    ("PAYMENT_ERROR / TXN_AUTO_FAILED", "unavailable"),
    ("Square: the payment link was closed unpaid", "cancelled"),
    ("Your card has expired.", "card"),
    ("3D Secure authentication failed", "authentication"),
    ("Declined by the bank (response codes 1/1).", "declined"),
    (None, "declined"),
])
def test_gateway_failure_texts_are_read_for_their_gist(reason, kind):
    assert failure_kind(reason) == kind


def test_patient_error_pages_name_the_lab_and_lead_back(client, build, contact_lab):
    link = build.link(contact_lab)
    response = client.get(f"/pay/{link.token}/qr.svg?x=1", headers={"Accept": "text/html"})
    assert response.status_code == 200
    paid = build.link(contact_lab, status=LinkStatus.PAID, amount_paid=123450)
    gone = client.get(f"/pay/{paid.token}/qr.svg")
    page = gone.get_data(as_text=True)
    assert gone.status_code == 410
    assert "Acme Diagnostics" in page and 'href="tel:+918045678900"' in page
    assert f'href="/pay/{paid.token}">Back to the payment page</a>' in page
    expired = client.post(f"/pay/{link.token}", data={"csrf_token": "stale"})
    page = expired.get_data(as_text=True)
    assert expired.status_code == 400 and "Acme Diagnostics" in page
    assert f'href="/pay/{link.token}">Back to the payment page</a>' in page


def test_staff_link_page_of_a_dead_link_keeps_only_the_receipt(staff_client, build, lab):
    link = build.link(lab, status=LinkStatus.PAID, amount_paid=123450)
    build.payment(link)
    page = staff_client.get(f"/links/{link.id}").get_data(as_text=True)
    for gone in ("qr.svg", "qr.png", "/print", 'id="patient-url"'):
        assert gone not in page, gone
    assert f'href="/pay/{link.token}/receipt"' in page
    assert f'href="/pay/{link.token}/receipt.pdf"' in page
    open_link = build.link(lab)
    page = staff_client.get(f"/links/{open_link.id}").get_data(as_text=True)
    assert "qr.svg" in page and 'id="patient-url"' in page and "/receipt" not in page


def test_a_failed_payment_has_no_refund_panel(staff_client, build, lab):
    link = build.link(lab)
    failed = build.payment(link, status=PaymentStatus.FAILED, failure_reason="Insufficient funds")
    page = staff_client.get(f"/transactions/{failed.id}").get_data(as_text=True)
    assert "Remaining refundable" not in page and 'id="refunds"' not in page
    assert "Not enough money in the patient&#39;s account" in page
    assert "Insufficient funds" not in page


def test_without_its_fonts_the_pdf_says_so_and_points_to_the_page(client, build, contact_lab,
                                                                   monkeypatch, tmp_path):
    from portal.services import receipt_pdf

    monkeypatch.setattr(receipt_pdf, "FONT_DIRS", (tmp_path,))
    link = paid_twice_refunded_once(build, contact_lab)
    response = client.get(f"/pay/{link.token}/receipt.pdf")
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and response.mimetype == "text/html"
    assert "The PDF receipt is not available right now" in page
    assert "printable receipt page" in page and "Acme Diagnostics" in page
    assert f'href="/pay/{link.token}">Back to the payment page</a>' in page
    assert client.get(f"/pay/{link.token}/receipt").status_code == 200


def test_pending_and_failed_refunds_are_not_on_the_receipt(build, lab):
    from portal.services.receipts import build_receipt

    link = build.link(lab, amount=10000)
    payment = build.payment(link)
    build.refund(payment, 3000, status=RefundStatus.PENDING)
    build.refund(payment, 2000, status=RefundStatus.FAILED)
    receipt = build_receipt(link)
    assert [e.kind for e in receipt.entries] == ["payment"]
    assert (receipt.total_paid, receipt.total_refunded, receipt.net_paid) == (10000, 0, 10000)


def test_a_part_paid_open_link_shows_what_is_still_to_pay_a_cancelled_one_does_not(
        client, build, lab, db):
    link = build.link(lab, amount=100000, allow_partial=True,
                      status=LinkStatus.PARTIALLY_PAID, amount_paid=40000)
    build.payment(link, amount=40000)
    page = client.get(f"/pay/{link.token}/receipt").get_data(as_text=True)
    assert "Still to pay" in page and "₹600.00" in page
    link.status = LinkStatus.CANCELLED
    db.commit()
    page = client.get(f"/pay/{link.token}/receipt").get_data(as_text=True)
    assert "Still to pay" not in page and "₹400.00" in page
