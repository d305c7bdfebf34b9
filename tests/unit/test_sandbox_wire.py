"""The sandbox's wire format: Stripe's signature scheme, fixed vectors, parsing."""

import json

import pytest

from gateways import sandbox
from gateways.base import EventStatus, MalformedPayload, SignatureError, UnknownStatus

# Stripe's own test payload and secret (stripe-python tests/test_webhook.py); the vector is
# the one in ../shared/reference/gateways.md §1. The sandbox signs exactly as Stripe does.
STRIPE_PAYLOAD = b"""{
  "id": "evt_test_webhook",
  "object": "event",
  "data": { "object": { "id": "rdr_123", "object": "terminal.reader" } }
}"""
STRIPE_VECTOR = ("t=1700000000,"
                 "v1=3bfab77baf5f7b6991a46c9b53b6547d7afc56148b10468fcad9f35c1992ffbd")
SECRET = "whsec_test_secret"
NOW = 1700000000


def test_signature_matches_stripes_published_vector():
    assert sandbox.sign(SECRET, STRIPE_PAYLOAD, NOW) == STRIPE_VECTOR


def test_good_signature_verifies():
    assert sandbox.verify_signature(SECRET, STRIPE_PAYLOAD, STRIPE_VECTOR, now=NOW + 10) == NOW


def test_any_of_several_v1_values_may_match():
    header = "t=1700000000,v1=" + "0" * 64 + "," + STRIPE_VECTOR.split(",")[1]
    assert sandbox.verify_signature(SECRET, STRIPE_PAYLOAD, header, now=NOW)


@pytest.mark.parametrize("header", [
    None, "", "t=1700000000", "v1=abc", "t=notanumber,v1=abc",
    STRIPE_VECTOR.replace("3bfab", "3bfac"),
])
def test_bad_headers_are_refused(header):
    with pytest.raises(SignatureError):
        sandbox.verify_signature(SECRET, STRIPE_PAYLOAD, header, now=NOW)


def test_tampered_body_is_refused():
    with pytest.raises(SignatureError):
        sandbox.verify_signature(SECRET, STRIPE_PAYLOAD.replace(b"rdr_123", b"rdr_124"),
                                 STRIPE_VECTOR, now=NOW)


def test_wrong_secret_is_refused():
    with pytest.raises(SignatureError):
        sandbox.verify_signature("whsec_other", STRIPE_PAYLOAD, STRIPE_VECTOR, now=NOW)


@pytest.mark.parametrize("skew", [301, -301, 3600])
def test_stale_or_far_future_timestamp_is_refused(skew):
    with pytest.raises(SignatureError, match="tolerance"):
        sandbox.verify_signature(SECRET, STRIPE_PAYLOAD, STRIPE_VECTOR, now=NOW + skew)


def test_within_tolerance_is_accepted():
    assert sandbox.verify_signature(SECRET, STRIPE_PAYLOAD, STRIPE_VECTOR, now=NOW + 300)


def test_event_body_is_the_documented_shape():
    body = sandbox.build_event("evt_1", True, "pay_abc", 123450, "INR", created=NOW)
    assert json.loads(body) == {"id": "evt_1", "type": "payment.succeeded", "created": NOW,
                                "data": {"reference": "pay_abc", "amount": 123450,
                                         "currency": "INR"}}


def test_parse_event():
    body = json.loads(sandbox.build_event("evt_2", False, "pay_x", 500, "INR", created=NOW))
    event = sandbox.parse_event(body)
    assert (event.dedupe_id, event.reference, event.status, event.amount, event.currency) == \
        ("evt_2", "pay_x", EventStatus.FAILED, 500, "INR")


def test_unknown_event_type_raises_instead_of_defaulting():
    body = {"id": "evt_3", "type": "payment.refunded_maybe", "created": NOW,
            "data": {"reference": "pay_x", "amount": 1, "currency": "INR"}}
    with pytest.raises(UnknownStatus):
        sandbox.parse_event(body)


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"data": {}}', b'{"id": 1}'])
def test_reference_cannot_be_read_from_malformed_bodies(raw):
    with pytest.raises(MalformedPayload):
        sandbox.SandboxGateway.extract_reference({}, raw)


@pytest.mark.parametrize("raw", [
    b'{"data": {"reference": "pay_x"}}',
    b'{"id": "evt", "type": "payment.succeeded", "created": 1, "data": {"reference": "p"}}',
    b'{"id": "evt", "type": "payment.succeeded", "created": "soon", '
    b'"data": {"reference": "p", "amount": 1, "currency": "INR"}}',
])
def test_signed_but_malformed_events_are_refused(raw):
    import time

    gateway = sandbox.SandboxGateway({"webhook_secret": SECRET}, api_base="http://x")
    header = sandbox.sign(SECRET, raw, int(time.time()))
    with pytest.raises(MalformedPayload):
        gateway.parse_webhook({"Sandbox-Signature": header}, raw)


def test_checkout_url_is_signed_and_checked():
    params = {"amount": "500", "currency": "INR", "merchant": "Acme", "bill": "B-1",
              "description": "", "return_url": "http://a/r", "notify_url": "http://a/n",
              "expires": "1800000000"}
    query = sandbox.checkout_query(SECRET, params)
    args = dict(pair.split("=", 1) for pair in query.split("&"))
    from urllib.parse import unquote_plus
    args = {k: unquote_plus(v) for k, v in args.items()}
    assert sandbox.verify_checkout_query(SECRET, args) == params
    with pytest.raises(SignatureError):
        sandbox.verify_checkout_query(SECRET, {**args, "amount": "1"})


def test_repr_never_shows_the_secret():
    gateway = sandbox.SandboxGateway({"webhook_secret": "whsec_supersecret"},
                                     api_base="http://x")
    assert "supersecret" not in repr(gateway)
