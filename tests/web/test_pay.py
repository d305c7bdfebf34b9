from datetime import timedelta

from sqlalchemy import select

from portal import qr
from portal.models import ExchangeKind, Job, LinkStatus, Payment, PaymentGatewayTransaction, utcnow
from tests.conftest import csrf_from
from tests.web.helpers import post_event, start_payment


def test_pay_page_shows_the_bill(client, build, lab):
    link = build.link(lab, amount=123450, bill_reference="B-77")
    response = client.get(f"/pay/{link.token}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<title>Pay ₹1,234.50 · Acme Diagnostics</title>" in page
    for text in ("Acme Diagnostics", "₹1,234.50", "B-77", "Pay ₹1,234.50", "Pay by"):
        assert text in page
    assert "Asha" not in page  # nothing about the patient beyond the bill
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in page


def test_unknown_token_is_404(client):
    assert client.get("/pay/" + "x" * 43).status_code == 404
    assert client.get("/pay/" + "x" * 300).status_code == 404


def test_expired_is_decided_at_request_time(client, build, lab, db):
    link = build.link(lab)
    opened = csrf_from(client.get(f"/pay/{link.token}").get_data(as_text=True))
    link.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "This payment link has expired" in page and "Pay ₹" not in page
    response = client.post(f"/pay/{link.token}", data={"csrf_token": opened})
    assert response.status_code == 409
    assert db.scalar(select(Payment)) is None


def test_cancelled_page(client, build, lab, db):
    link = build.link(lab, status=LinkStatus.CANCELLED)
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "This payment link was cancelled" in page and "Pay ₹" not in page


def test_pay_redirects_to_the_gateway_and_records_the_exchange(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    payment = db.scalar(select(Payment))
    assert (payment.reference, payment.amount, payment.status.value, payment.gateway) == \
        (reference, 123450, "pending", "sandbox")
    exchange = db.scalar(select(PaymentGatewayTransaction))
    assert exchange.kind == ExchangeKind.CHECKOUT_CREATED and exchange.payment_id == payment.id
    assert payment.checkout_url.startswith(f"http://127.0.0.1:5000/sandbox/checkout/{reference}")


def test_second_press_reuses_the_checkout(client, build, lab, db):
    link = build.link(lab)
    first = start_payment(client, link)
    second = start_payment(client, link)
    assert first == second
    assert len(db.scalars(select(Payment)).all()) == 1


def test_missing_gateway_keys_give_a_clear_message(client, build):
    lab = build.lab("nokeys", sandbox_secret=None)
    link = build.link(lab)
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    response = client.post(f"/pay/{link.token}", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 503
    assert "Online payment is not available for this bill right now" in \
        response.get_data(as_text=True)


def test_full_loop_paid_page_and_receipt(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    processing = client.get(f"/pay/{link.token}/return?ref={reference}").get_data(as_text=True)
    assert "Processing your payment" in processing
    assert '<meta http-equiv="refresh"' in processing  # works without JavaScript
    assert post_event(client, reference).status_code == 200
    done = client.get(f"/pay/{link.token}/return?ref={reference}").get_data(as_text=True)
    assert "Payment received" in done
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "Paid" in page and "Receipt" in page and "Pay ₹" not in page
    receipt = client.get(f"/pay/{link.token}/receipt")
    assert receipt.status_code == 200 and "₹1,234.50" in receipt.get_data(as_text=True)
    assert client.get(f"/pay/{link.token}/status.json").get_json()["status"] == "paid"


def test_return_without_a_webhook_asks_the_worker_to_fetch_status(client, build, lab, db):
    link = build.link(lab)
    reference = start_payment(client, link)
    client.get(f"/pay/{link.token}/return?ref={reference}")
    client.get(f"/pay/{link.token}/return?ref={reference}")  # a reload queues nothing more
    jobs = db.scalars(select(Job).where(Job.kind == "payment.fetch_status")).all()
    assert len(jobs) == 1


def test_receipt_needs_a_payment(client, build, lab):
    link = build.link(lab)
    assert client.get(f"/pay/{link.token}/receipt").status_code == 404


def test_declined_payment_offers_a_retry(client, build, lab):
    link = build.link(lab)
    reference = start_payment(client, link)
    post_event(client, reference, succeeded=False)
    page = client.get(f"/pay/{link.token}/return?ref={reference}").get_data(as_text=True)
    assert "The payment did not go through" in page and "Try again" in page


def test_status_json(client, build, lab):
    link = build.link(lab)
    data = client.get(f"/pay/{link.token}/status.json").get_json()
    assert data == {"status": "created", "amount": 123450, "currency": "INR",
                    "amount_paid": 0, "outstanding": 123450,
                    "expires_at": link.expires_at.isoformat(), "latest_payment": None}


def test_qr_codes_encode_the_patient_url_from_the_base_url(client, build, lab, app):
    app.config["PORTAL_BASE_URL"] = "https://pay.acme.example"
    link = build.link(lab)
    url = f"https://pay.acme.example/pay/{link.token}"
    svg = client.get(f"/pay/{link.token}/qr.svg")
    png = client.get(f"/pay/{link.token}/qr.png")
    assert svg.mimetype == "image/svg+xml" and svg.data == qr.svg(url)
    assert png.mimetype == "image/png" and png.data == qr.png(url)
    assert png.data.startswith(b"\x89PNG") and b"<svg" in svg.data


def test_pay_page_has_no_third_party_requests(client, build, lab):
    import re

    link = build.link(lab)
    page = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<script" not in page  # the pay page needs no JavaScript at all


def test_bad_pay_link_gets_a_patient_page_not_the_staff_one(client):
    response = client.get("/pay/not-a-real-token")
    page = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "This payment link is not valid" in page and "Sign in" not in page


def test_pay_without_a_csrf_token_gets_a_patient_page_and_no_payment(client, build, lab, db):
    link = build.link(lab)
    response = client.post(f"/pay/{link.token}")
    assert response.status_code == 400
    assert "Please try again" in response.get_data(as_text=True)
    assert db.scalar(select(Payment)) is None


def test_a_patient_get_sets_no_cookie_and_the_form_token_still_guards_pay(client, build, lab, db):
    link, other = build.link(lab), build.link(lab)
    response = client.get(f"/pay/{link.token}")
    assert response.status_code == 200 and "Set-Cookie" not in response.headers
    token = csrf_from(response.get_data(as_text=True))
    foreign = csrf_from(client.get(f"/pay/{other.token}").get_data(as_text=True))
    staff_token = csrf_from(client.get("/login").get_data(as_text=True))
    for refused in ("", "forged", foreign, staff_token, token[:-2] + "xx"):
        response = client.post(f"/pay/{link.token}", data={"csrf_token": refused})
        assert response.status_code == 400, refused
    response = client.post(f"/pay/{link.token}", data={"csrf_token": token},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 400
    response = client.post(f"/pay/{link.token}", data={"csrf_token": token},
                           headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 400
    assert db.scalar(select(Payment)) is None
    response = client.post(f"/pay/{link.token}", data={"csrf_token": token},
                           headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "none"})
    assert response.status_code == 400  # a foreign Origin is refused whatever else is said
    response = client.post(f"/pay/{link.token}", data={"csrf_token": token},
                           headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 303  # our pages send no referrer: the Origin is "null"
    assert db.scalar(select(Payment)) is not None


def test_the_pay_form_token_expires_after_a_day(client, build, lab, monkeypatch):
    from portal.pay import formtoken

    link = build.link(lab)
    token = csrf_from(client.get(f"/pay/{link.token}").get_data(as_text=True))
    monkeypatch.setattr(formtoken, "MAX_AGE_SECONDS", -1)
    response = client.post(f"/pay/{link.token}", data={"csrf_token": token})
    assert response.status_code == 400


def test_the_pay_page_is_one_query(client, build, lab, db, app):
    """Rendered: the link joined with its lab and payments (after the version check). Reused:
    the one version check, with no transaction statements around it. Counted by SQLite
    itself, so statements sent straight through the driver count too."""
    from sqlalchemy import event

    link = build.link(lab)
    engine = app.extensions["portal_db"].engine
    engine.dispose()
    traced: list[str] = []
    event.listen(engine, "connect", lambda dbapi_conn, _record:
                 dbapi_conn.set_trace_callback(traced.append))
    client.get("/login")  # the app warmed up

    def statements_of(path):
        traced.clear()
        assert client.get(path).status_code == 200
        return [s for s in traced if not s.lstrip().upper().startswith("PRAGMA")]

    rendered = statements_of(f"/pay/{link.token}")
    version_check, *rest = rendered
    assert "updated_at" in version_check and "JOIN labs" in version_check, rendered
    transaction = [s for s in rest if s.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    queries = [s for s in rest if s not in transaction]
    assert len(queries) == 1, rendered
    assert "JOIN labs" in queries[0] and "JOIN payments" in queries[0]
    reused = statements_of(f"/pay/{link.token}")
    assert reused == [version_check], reused


def test_a_reused_page_is_rendered_afresh_once_anything_on_it_changes(client, build, lab, db,
                                                                      app):
    link = build.link(lab)
    first = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert client.get(f"/pay/{link.token}").get_data(as_text=True) == first  # reused
    lab.name = "Acme Labs Renamed"
    db.commit()
    assert "Acme Labs Renamed" in client.get(f"/pay/{link.token}").get_data(as_text=True)
    reference = start_payment(client, link)
    assert "Payment received" not in client.get(f"/pay/{link.token}").get_data(as_text=True)
    post_event(client, reference)
    paid = client.get(f"/pay/{link.token}").get_data(as_text=True)
    assert "Pay ₹" not in paid
    other = build.link(lab)
    client.get(f"/pay/{other.token}")
    other.expires_at = utcnow() - timedelta(seconds=1)
    db.commit()
    assert "This payment link has expired" in client.get(f"/pay/{other.token}").get_data(
        as_text=True)


def test_a_reused_page_keeps_each_patients_language(client, build, lab):
    link = build.link(lab)
    english = client.get(f"/pay/{link.token}").get_data(as_text=True)
    hindi = client.get(f"/pay/{link.token}", headers={"Accept-Language": "hi"}).get_data(
        as_text=True)
    assert 'lang="hi"' in hindi and 'lang="en"' in english.split("<head>")[0]
    again = client.get(f"/pay/{link.token}", headers={"Accept-Language": "hi"})
    assert again.get_data(as_text=True) == hindi
    assert client.get(f"/pay/{link.token}").get_data(as_text=True) == english
