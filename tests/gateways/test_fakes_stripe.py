"""The Stripe fake behaves like Stripe through the real `stripe` SDK, with localstripe upstream."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
import stripe
from werkzeug.wrappers import Request, Response

from tests.fakes.localstripe import register_webhook, start_localstripe
from tests.fakes.server import FakeServer
from tests.fakes.stripe_fake import DEFAULT_KEY, FakeStripe, parse_form, sign_stripe

SECRET = "whsec_test_fake_stripe"
# The 4-line payload of stripe-python's tests/test_webhook.py; the header is from the reference.
VECTOR_BODY = (b'{\n  "id": "evt_test_webhook",\n  "object": "event",\n  "data": { "object": '
               b'{ "id": "rdr_123", "object": "terminal.reader" } }\n}')
VECTOR_HEADER = "t=1700000000,v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd"


class Inbox(FakeServer):
    """A webhook endpoint that answers 200 and records what it got."""

    def handle(self, request: Request) -> Response:
        return Response("ok")


@pytest.fixture(scope="module")
def localstripe_url():
    with start_localstripe() as url:
        yield url


@pytest.fixture
def inbox():
    with Inbox() as server:
        yield server


@pytest.fixture
def fake(inbox):
    with FakeStripe(webhook_delay=0.05) as server:
        server.add_webhook(f"{inbox.url}/hook", SECRET)
        yield server


def client(base_url: str, key: str = DEFAULT_KEY, **options) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": base_url}, **options)


def session_params(**overrides) -> dict:
    params = {
        "mode": "payment", "client_reference_id": "PAY-7", "metadata": {"reference": "PAY-7"},
        "line_items": [{"quantity": 1, "price_data": {
            "currency": "inr", "unit_amount": 123450, "product_data": {"name": "Lab tests"}}}],
        "success_url": "http://portal.test/return?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://portal.test/cancelled",
        "payment_intent_data": {"metadata": {"reference": "PAY-7"}},
        "expires_at": int(time.time()) + 3600,
    }
    return {key: value for key, value in {**params, **overrides}.items() if value is not None}


def verified_events(inbox: Inbox, count: int) -> list[stripe.Event]:
    deadline = time.monotonic() + 5
    while len(inbox.requests) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [stripe.Webhook.construct_event(r.body, r.headers["Stripe-Signature"], SECRET)
            for r in inbox.requests]


def test_signature_matches_the_reference_vector_and_the_sdk():
    assert sign_stripe("whsec_test_secret", VECTOR_BODY, 1700000000) == VECTOR_HEADER
    now = int(time.time())
    header = sign_stripe(SECRET, VECTOR_BODY, now)
    assert stripe.Webhook.construct_event(VECTOR_BODY, header, SECRET).id == "evt_test_webhook"


def test_bracket_notation_is_parsed_into_nested_dicts_and_lists():
    pairs = [("line_items[1][quantity]", "2"), ("line_items[0][price_data][currency]", "inr"),
             ("metadata[reference]", ""), ("expand[]", "a"), ("expand[]", "b")]
    assert parse_form(pairs) == {"line_items": [{"price_data": {"currency": "inr"}},
                                                {"quantity": "2"}],
                                 "metadata": {"reference": ""}, "expand": ["a", "b"]}


def test_create_retrieve_list_and_expire(fake, inbox):
    sessions = client(fake.url).v1.checkout.sessions
    created = sessions.create(params=session_params())
    assert re.fullmatch(r"cs_test_\w+", created.id)
    assert created.url == f"{fake.url}/c/pay/{created.id}"
    assert (created.status, created.payment_status, created.amount_total, created.currency) == (
        "open", "unpaid", 123450, "inr")
    assert created.client_reference_id == "PAY-7" and created.metadata["reference"] == "PAY-7"
    assert sessions.retrieve(created.id).expires_at == created.expires_at

    expired = sessions.expire(created.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError, match="status"):
        sessions.expire(created.id)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sessions.retrieve("cs_test_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    [event] = verified_events(inbox, 1)
    assert event.type == "checkout.session.expired" and event.data.object.id == created.id


@pytest.mark.parametrize(("overrides", "code", "param"), [
    ({"mode": None}, "parameter_missing", "mode"),
    ({"success_url": None}, "parameter_missing", "success_url"),
    ({"line_items": [{"price_data": {"currency": "inr", "unit_amount": "19.99",
                                     "product_data": {"name": "x"}}, "quantity": 1}]},
     "parameter_invalid_integer", "line_items[0][price_data][unit_amount]"),
    ({"line_items": [{"price_data": {"currency": "INR", "unit_amount": 5,
                                     "product_data": {"name": "x"}}, "quantity": 1}]},
     None, "line_items[0][price_data][currency]"),
    ({"line_items": [{"price_data": {"currency": "inr", "unit_amount": 5,
                                     "product_data": {"name": "x"}}}]},
     "parameter_missing", "line_items[0][quantity]"),
    ({"expires_at": int(time.time()) + 600}, None, "expires_at"),
    ({"expires_at": int(time.time()) + 2 * 86400}, None, "expires_at"),
    ({"amount": 5}, "parameter_unknown", "amount"),
])
def test_invalid_sessions_get_stripe_style_400s(fake, overrides, code, param):
    with pytest.raises(stripe.InvalidRequestError) as error:
        client(fake.url).v1.checkout.sessions.create(params=session_params(**overrides))
    assert (error.value.http_status, error.value.code, error.value.param) == (400, code, param)
    assert not fake.sessions


def test_wrong_or_missing_key_is_refused_like_stripe(fake):
    with pytest.raises(stripe.AuthenticationError) as error:
        client(fake.url, "sk_test_wrongkeyabcd").v1.checkout.sessions.list()
    assert error.value.user_message == "Invalid API Key provided: sk_test_********abcd"
    assert requests.get(f"{fake.url}/v1/checkout/sessions", timeout=5).status_code == 401
    basic = requests.get(f"{fake.url}/v1/checkout/sessions", auth=(DEFAULT_KEY, ""), timeout=5)
    assert basic.status_code == 200 and basic.json()["object"] == "list"


def test_idempotency_key_replays_the_saved_answer_and_refuses_other_params(fake):
    sessions = client(fake.url).v1.checkout.sessions
    params = session_params()
    first = sessions.create(params=params, options={"idempotency_key": "link-7"})
    again = sessions.create(params=params, options={"idempotency_key": "link-7"})
    assert again.id == first.id and len(fake.sessions) == 1
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        sessions.create(params={**params, "client_reference_id": "PAY-8"},
                        options={"idempotency_key": "link-7"})


def test_injected_failure_and_delay(fake):
    sessions = client(fake.url).v1.checkout.sessions
    fake.fail_next(500)
    with pytest.raises(stripe.APIError) as error:
        sessions.list()
    assert error.value.http_status == 500
    fake.fail_next(402)
    with pytest.raises(stripe.CardError):
        sessions.list()
    fake.delay_next(1.0)  # the session is made at once, only the answer is late
    impatient = client(fake.url, http_client=stripe.RequestsClient(timeout=0.3))
    params = session_params()
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.checkout.sessions.create(params=params, options={"idempotency_key": "slow"})
    retried = sessions.create(params=params, options={"idempotency_key": "slow"})
    assert list(fake.sessions) == [retried.id]
    assert retried.last_response.headers["Idempotent-Replayed"] == "true"


def test_pay_without_upstream_keeps_payments_and_refunds_locally(fake, inbox):
    v1 = client(fake.url).v1
    created = v1.checkout.sessions.create(params=session_params())
    answer = requests.post(created.url, data={"outcome": "pay"}, allow_redirects=False,
                           timeout=5)
    assert answer.status_code == 303
    paid = v1.checkout.sessions.retrieve(created.id, params={"expand": ["payment_intent"]})
    assert paid.payment_status == "paid" and paid.payment_intent.status == "succeeded"
    assert v1.refunds.create(params={"payment_intent": paid.payment_intent.id,
                                     "amount": 20000}).amount == 20000
    assert v1.refunds.create(params={"payment_intent": paid.payment_intent.id}).amount == 103450
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        v1.refunds.create(params={"payment_intent": paid.payment_intent.id})


def test_async_payment_completes_unpaid_then_succeeds(fake, inbox):
    fake.async_payment = True
    v1 = client(fake.url).v1
    created = v1.checkout.sessions.create(params=session_params())
    requests.post(created.url, data={"outcome": "pay"}, allow_redirects=False, timeout=5)
    assert v1.checkout.sessions.retrieve(created.id).payment_status == "unpaid"
    events = verified_events(inbox, 2)
    assert [(e.type, e.data.object.payment_status) for e in events] == [
        ("checkout.session.completed", "unpaid"),
        ("checkout.session.async_payment_succeeded", "paid")]
    assert v1.checkout.sessions.retrieve(created.id).payment_status == "paid"


def test_hosted_page_pays_for_real_at_localstripe(localstripe_url, inbox):
    with FakeStripe(upstream=localstripe_url, webhook_delay=0.05) as fake:
        fake.add_webhook(f"{inbox.url}/hook", SECRET)
        v1 = client(fake.url).v1
        created = v1.checkout.sessions.create(params=session_params(
            customer_creation="always", customer_email="patient@example.com"))
        browser = requests.Session()
        page = browser.get(created.url, timeout=5).text
        assert "1234.50 INR" in page and "PAY-7" in page
        assert '<a href="http://portal.test/cancelled">Cancel</a>' in page
        assert re.search(r'<label for="card_number">Card number</label>\s*<input id="card_number"'
                         r' name="card_number" value="4242424242424242"', page)

        declined = browser.post(created.url, data={"outcome": "decline"}, timeout=5)
        assert declined.status_code == 200 and "Your card was declined." in declined.text
        refused = browser.post(created.url, timeout=5, data={
            "outcome": "pay", "card_number": "4000000000000341"})  # localstripe refuses it
        assert refused.status_code == 200 and "Your card was declined." in refused.text
        assert v1.checkout.sessions.retrieve(created.id).status == "open"

        paid = browser.post(created.url, data={"outcome": "pay", "name": "A Patient",
                                               "card_number": "4242424242424242"},
                            allow_redirects=False, timeout=5)
        assert paid.status_code == 303
        assert paid.headers["Location"] == f"http://portal.test/return?session={created.id}"

        session = v1.checkout.sessions.retrieve(
            created.id, params={"expand": ["payment_intent.payment_method"]})
        assert (session.status, session.payment_status) == ("complete", "paid")
        intent = session.payment_intent
        assert intent.payment_method.card.last4 == "4242"
        upstream = client(localstripe_url).v1.payment_intents.retrieve(intent.id)
        assert (upstream.status, upstream.amount, upstream.currency) == ("succeeded", 123450, "inr")
        assert upstream.metadata["reference"] == "PAY-7"
        assert upstream.customer == session.customer and session.customer.startswith("cus_")
        found = v1.checkout.sessions.list(params={"payment_intent": intent.id})
        assert [s.id for s in found.data] == [created.id]

        refund = v1.refunds.create(params={"payment_intent": intent.id, "amount": 20000},
                                   options={"idempotency_key": "refund-1"})
        assert (refund.status, refund.amount) == ("succeeded", 20000)
        [event] = verified_events(inbox, 1)
        assert event.type == "checkout.session.completed"
        assert event.data.object.payment_intent == intent.id
        assert json.loads(inbox.requests[0].body)["data"]["object"]["metadata"] == {
            "reference": "PAY-7"}


def test_localstripe_signs_its_own_payment_intent_webhooks(localstripe_url, inbox):
    register_webhook(localstripe_url, "test-fakes", f"{inbox.url}/hook", SECRET,
                     events=["payment_intent.succeeded"])
    try:
        v1 = client(localstripe_url).v1
        method = v1.payment_methods.create(params={"type": "card", "card": {
            "number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})
        intent = v1.payment_intents.create(params={
            "amount": 5000, "currency": "inr", "payment_method": method.id, "confirm": True,
            "metadata": {"reference": "PAY-9"}})
        deadline = time.monotonic() + 5  # an earlier test's event may come in first
        while intent.id not in {e.data.object.id for e in verified_events(inbox, 1)}:
            assert time.monotonic() < deadline, "no payment_intent.succeeded for the intent"
            time.sleep(0.05)
        event = next(e for e in verified_events(inbox, 1) if e.data.object.id == intent.id)
    finally:  # localstripe cannot forget a webhook: point this one at no event type
        register_webhook(localstripe_url, "test-fakes", f"{inbox.url}/hook", SECRET,
                         events=["never.sent"])
    assert event.type == "payment_intent.succeeded"
    assert event.data.object.metadata["reference"] == "PAY-9"
