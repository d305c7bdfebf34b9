"""The Razorpay fake, driven through the real `razorpay` SDK and a browser-like session."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import razorpay
import requests
from razorpay.errors import BadRequestError, ServerError, SignatureVerificationError
from werkzeug.wrappers import Request, Response

from tests.fakes.razorpay_fake import FakeRazorpay, sign_payment_link_return, sign_webhook
from tests.fakes.server import FakeServer

KEY, SECRET, WEBHOOK_SECRET = "rzp_test_x", "secret", "whsec_rzp"


class Sink(FakeServer):
    """Stands in for our app: accepts webhooks and the browser's return."""

    def handle(self, request: Request) -> Response:
        return Response("ok")


@pytest.fixture
def sink():
    with Sink() as server:
        yield server


@pytest.fixture
def fake(sink):
    with FakeRazorpay(keys={KEY: SECRET}, webhook_secret=WEBHOOK_SECRET) as server:
        server.add_webhook(f"{sink.url}/webhooks/razorpay")
        yield server


@pytest.fixture
def client(fake):
    return razorpay.Client(auth=(KEY, SECRET), base_url=fake.url)


def new_link(client, sink=None, **extra):
    data = {"amount": 50000, "currency": "INR", "reference_id": f"ref-{time.monotonic_ns()}",
            "description": "CBC panel", "customer": {"name": "A Patient", "email": "a@x.in"},
            "notify": {"sms": False, "email": False}, "notes": {"lab": "L1"}, **extra}
    if sink is not None:
        data.update(callback_url=f"{sink.url}/return?lab=L1", callback_method="get")
    return client.payment_link.create(data)


def pay(link, outcome="pay", **form) -> requests.Response:
    browser = requests.Session()
    page = browser.get(link["short_url"])
    assert page.status_code == 200 and "Pay" in page.text and "Decline" in page.text
    return browser.post(link["short_url"], data={"outcome": outcome, **form})


def test_published_payment_link_vector():
    assert sign_payment_link_return(
        "EnLs21M47BllR3X8PSFtjtbd", "plink_IH3cNucfVEgV68", "TSsd1989", "paid",
        "pay_IH3d0ara9bSsjQ",
    ) == "07ae18789e35093e51d0a491eb9922646f3f82773547e5b0f67ee3f2d3bf7d5b"


def test_create_fetch_list_and_cancel_a_link(fake, client):
    link = new_link(client, expire_by=int(time.time()) + 3600)
    assert re.fullmatch(r"plink_[A-Za-z0-9]{14}", link["id"])
    assert link["short_url"] == f"{fake.url}/pl/{link['id']}"
    assert (link["status"], link["amount_paid"], link["payments"]) == ("created", 0, None)
    assert link["notes"] == {"lab": "L1"} and link["customer"]["email"] == "a@x.in"
    assert client.payment_link.fetch(link["id"]) == link
    found = client.payment_link.all({"reference_id": link["reference_id"]})["payment_links"]
    assert [item["id"] for item in found] == [link["id"]]
    assert client.payment_link.all({"reference_id": "nope"}) == {"payment_links": []}

    cancelled = client.payment_link.cancel(link["id"])
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] > 0
    with pytest.raises(BadRequestError, match="expired link"):
        client.payment_link.cancel(link["id"])
    with pytest.raises(BadRequestError, match="reference ID already attempted"):
        new_link(client, reference_id=link["reference_id"])
    (event,) = fake.wait_events(1)
    assert event.event == "payment_link.cancelled"
    assert event.json["payload"]["payment_link"]["entity"]["status"] == "cancelled"


@pytest.mark.parametrize("extra, field", [
    ({"amount": 99}, "amount"),
    ({"amount": 100.5}, "amount"),
    ({"currency": "XYZ"}, "currency"),
    ({"reference_id": "r" * 41}, "reference_id"),
    ({"expire_by": int(time.time()) + 600}, "expire_by"),
    ({"expire_by": int(time.time()) + 200 * 24 * 3600}, "expire_by"),
    ({"callback_url": "https://lab.example/return"}, "callback_method"),
    ({"callback_url": "https://lab.example/return", "callback_method": "post"},
     "callback_method"),
    ({"amount_in_rupees": 5}, "amount_in_rupees"),
])
def test_link_validation_answers_razorpays_error_object(fake, client, extra, field):
    with pytest.raises(BadRequestError):
        new_link(client, **extra)
    raw = requests.post(f"{fake.url}/v1/payment_links", auth=(KEY, SECRET),
                        json={"amount": 50000, **extra})
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["code"] == "BAD_REQUEST_ERROR" and error["field"] == field
    assert {"description", "source", "step", "reason", "metadata"} <= error.keys()


def test_bad_credentials_are_refused(fake):
    wrong = razorpay.Client(auth=(KEY, "not-the-secret"), base_url=fake.url)
    with pytest.raises(BadRequestError, match="Authentication failed"):
        wrong.payment_link.all()
    raw = requests.get(f"{fake.url}/v1/payment_links")
    assert raw.status_code == 401
    assert raw.json()["error"]["code"] == "BAD_REQUEST_ERROR"


def test_pay_redirects_with_a_verifiable_signature_and_sends_signed_webhooks(fake, client, sink):
    link = new_link(client, sink)
    answer = pay(link, method="card")
    assert answer.history[0].status_code == 302
    assert answer.url.startswith(f"{sink.url}/return?lab=L1&")
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer.url).query).items()}
    assert query["razorpay_payment_link_id"] == link["id"]
    assert query["razorpay_payment_link_reference_id"] == link["reference_id"]
    assert query["razorpay_payment_link_status"] == "paid"
    assert query["razorpay_signature"] == sign_payment_link_return(
        SECRET, link["id"], link["reference_id"], "paid", query["razorpay_payment_id"])
    params = {"payment_link_id": link["id"], "payment_link_status": "paid",
              "payment_link_reference_id": link["reference_id"],
              "razorpay_payment_id": query["razorpay_payment_id"],
              "razorpay_signature": query["razorpay_signature"]}
    assert client.utility.verify_payment_link_signature(params)
    with pytest.raises(SignatureVerificationError):
        client.utility.verify_payment_link_signature({**params, "payment_link_status": "x"})

    events = fake.wait_events(2)
    assert [e.event for e in events] == ["payment.captured", "payment_link.paid"]
    assert len({e.headers["x-razorpay-event-id"] for e in events}) == 2
    for event in events:
        assert event.status == 200 and event.url.endswith("/webhooks/razorpay")
        signature = event.headers["X-Razorpay-Signature"]
        assert signature == sign_webhook(WEBHOOK_SECRET, event.body)
        assert client.utility.verify_webhook_signature(event.body.decode(), signature,
                                                       WEBHOOK_SECRET)
    received = sink.requests_to("POST", "/webhooks/razorpay")
    assert [r.body for r in received] == [e.body for e in events]
    captured, paid = (e.json for e in events)
    payment = captured["payload"]["payment"]["entity"]
    assert captured["contains"] == ["payment"] and captured["account_id"].startswith("acc_")
    assert payment["id"] == query["razorpay_payment_id"] and payment["status"] == "captured"
    assert payment["description"] == "#" + link["id"].removeprefix("plink_")
    assert payment["notes"] == {"lab": "L1"} and payment["card"]["last4"] == "1111"
    assert paid["contains"] == ["payment_link", "order", "payment"]
    hook_link = paid["payload"]["payment_link"]["entity"]
    assert (hook_link["reference_id"], hook_link["status"]) == (link["reference_id"], "paid")
    assert hook_link["order_id"] == payment["order_id"]
    assert paid["payload"]["order"]["entity"]["receipt"] == link["reference_id"]

    fetched = client.payment_link.fetch(link["id"])
    assert (fetched["status"], fetched["amount_paid"]) == ("paid", 50000)
    assert [p["payment_id"] for p in fetched["payments"]] == [payment["id"]]
    plain = client.payment.fetch(payment["id"])
    assert plain["captured"] is True and plain["method"] == "card" and "card" not in plain
    assert client.payment.fetch(payment["id"], {"expand[]": "card"})["card"]["network"] == "Visa"
    assert "This payment link is paid" in requests.get(link["short_url"]).text


def test_decline_fails_the_payment_and_keeps_the_link_open(fake, client, sink):
    link = new_link(client, sink)
    answer = pay(link, outcome="decline", method="upi")
    assert answer.status_code == 200 and not answer.history
    assert "Payment failed" in answer.text and "Pay</button>" in answer.text
    (event,) = fake.wait_events(1)
    payment = event.json["payload"]["payment"]["entity"]
    assert event.event == "payment.failed" and payment["status"] == "failed"
    assert payment["error_code"] == "BAD_REQUEST_ERROR" and payment["method"] == "upi"
    assert client.payment.fetch(payment["id"])["status"] == "failed"
    assert client.payment_link.fetch(link["id"])["status"] == "created"


def test_expire_sends_the_event_and_closes_the_page(fake, client):
    link = new_link(client)
    fake.expire(link["id"])
    assert client.payment_link.fetch(link["id"])["status"] == "expired"
    (event,) = fake.wait_events(1)
    assert event.event == "payment_link.expired" and event.json["contains"] == ["payment_link"]
    page = requests.get(link["short_url"]).text
    assert "This payment link is expired" in page and "Pay</button>" not in page


def paid_payment_id(fake, client, sink) -> str:
    link = new_link(client, sink)
    pay(link)
    return fake.wait_events(2)[0].json["payload"]["payment"]["entity"]["id"]


def test_partial_then_full_refund_and_over_refund(fake, client, sink):
    pay_id = paid_payment_id(fake, client, sink)
    first = client.payment.refund(pay_id, {"amount": 20000, "notes": {"why": "dup"}})
    assert (first["status"], first["amount"], first["entity"]) == ("pending", 20000, "refund")
    payment = client.payment.fetch(pay_id)
    assert (payment["amount_refunded"], payment["refund_status"]) == (20000, "partial")
    with pytest.raises(BadRequestError, match="greater than amount captured"):
        client.payment.refund(pay_id, {"amount": 30001})
    rest = client.payment.refund(pay_id, {})
    assert rest["amount"] == 30000
    payment = client.payment.fetch(pay_id)
    assert (payment["status"], payment["refund_status"]) == ("refunded", "full")
    with pytest.raises(BadRequestError, match="fully refunded already"):
        client.payment.refund(pay_id, {"amount": 100})
    listed = client.payment.fetch_multiple_refund(pay_id)
    assert listed["count"] == 2 and {r["id"] for r in listed["items"]} == {first["id"], rest["id"]}

    fake.process_refund(first["id"])
    fake.process_refund(rest["id"], ok=False)
    assert client.refund.fetch(first["id"])["status"] == "processed"
    assert client.refund.fetch(rest["id"])["status"] == "failed"
    assert client.payment.fetch(pay_id)["refund_status"] == "partial"
    events = fake.wait_events(6)[2:]
    assert [e.event for e in events] == ["refund.created", "refund.created",
                                         "refund.processed", "refund.failed"]
    processed = events[2]
    assert processed.json["contains"] == ["refund", "payment"]
    assert processed.json["payload"]["refund"]["entity"]["id"] == first["id"]
    assert client.utility.verify_webhook_signature(
        processed.body.decode(), processed.headers["X-Razorpay-Signature"], WEBHOOK_SECRET)


def test_refund_idempotency_key(fake, client, sink):
    pay_id = paid_payment_id(fake, client, sink)
    headers = {"X-Refund-Idempotency": "refund-0001-abc"}
    first = client.payment.refund(pay_id, {"amount": 1000}, headers=dict(headers))
    again = client.payment.refund(pay_id, {"amount": 1000}, headers=dict(headers))
    assert again["id"] == first["id"]
    assert client.payment.fetch_multiple_refund(pay_id)["count"] == 1
    with pytest.raises(BadRequestError, match="same idempotency key"):
        client.payment.refund(pay_id, {"amount": 2000}, headers=dict(headers))
    with pytest.raises(BadRequestError, match="at least 10 characters"):
        client.payment.refund(pay_id, {"amount": 1000}, headers={"X-Refund-Idempotency": "short"})


def test_refunds_can_settle_immediately(fake, client, sink):
    fake.refunds_settle_immediately = True
    pay_id = paid_payment_id(fake, client, sink)
    assert client.payment.refund(pay_id, {"amount": 500})["status"] == "processed"
    assert [e.event for e in fake.wait_events(4)[2:]] == ["refund.created", "refund.processed"]


def test_injected_faults_surface_as_the_sdk_raises_them(fake, client):
    fake.fail_next(500)
    with pytest.raises(ServerError):
        client.payment_link.all()
    fake.fail_next(400, "Payment link is not payable", path="/v1/payment_links")
    with pytest.raises(BadRequestError, match="not payable"):
        client.payment_link.all()
    fake.fail_next(502, raw=b"<html>Bad Gateway</html>")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        client.payment_link.all()
    fake.fail_next(504, after=True)
    with pytest.raises(ServerError):
        new_link(client, reference_id="lost-answer")
    assert len(client.payment_link.all({"reference_id": "lost-answer"})["payment_links"]) == 1
    fake.delay_next(1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.payment_link.all(timeout=0.2)
    assert client.payment_link.all()["payment_links"]


def test_customers_and_tokens(fake, client):
    customer = client.customer.create({"name": "A", "email": "a@x.in", "contact": "9000090000"})
    assert re.fullmatch(r"cust_[A-Za-z0-9]{14}", customer["id"])
    with pytest.raises(BadRequestError, match="already exists"):
        client.customer.create({"name": "A", "email": "a@x.in", "contact": "9000090000"})
    same = client.customer.create({"email": "a@x.in", "contact": "9000090000",
                                   "fail_existing": "0"})
    assert same["id"] == customer["id"]
    token = fake.add_token(customer["id"], last4="4242")
    listed = client.token.all(customer["id"])
    assert listed["count"] == 1 and listed["items"][0]["card"]["last4"] == "4242"
    assert client.token.delete(customer["id"], token["id"]) == {"deleted": True}
    assert client.token.all(customer["id"])["count"] == 0
    with pytest.raises(BadRequestError, match="does not exist"):
        client.token.delete(customer["id"], token["id"])
