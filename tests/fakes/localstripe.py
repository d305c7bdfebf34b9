"""Run localstripe (a stateful fake Stripe API, PyPI `localstripe` 1.15) as a subprocess.

Usage::

    with start_localstripe() as base_url:
        register_webhook(base_url, "portal", "http://127.0.0.1:5000/hook", "whsec_x")
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": base_url})

What works against localstripe 1.15.10 through `stripe` 16.1 (`client.v1...`), checked by hand:

* `customers.create(params={"name", "email", "metadata"})`.
* `payment_methods.create(params={"type": "card", "card": {"number": "4242424242424242",
  "exp_month": 12, "exp_year": 2034, "cvc": "123"}})`: all four card fields are required (cvc of
  3 digits); `card[token]=tok_visa` is refused. `pm_card_visa`, `pm_card_visa_chargeDeclined`
  and `pm_card_chargeCustomerFail` work as ids, but every use mints a new `pm_...` (a PI keeps
  the literal `"pm_card_visa"` as its `payment_method`), so prefer a PaymentMethod by number.
* `payment_methods.attach(pm, params={"customer": cus})`, `payment_methods.detach(pm)`, list with
  `payment_methods.list(params={"customer": cus, "type": "card"})` (`type` required).
  `GET /v1/customers/{id}/payment_methods` does not exist (plain-text 404: the SDK raises
  `stripe.APIError`, not `InvalidRequestError`).
* `payment_intents.create(params={"amount", "currency", "customer", "payment_method",
  "metadata", "confirm": True, "off_session": True})`: card PIs succeed at once.
  `off_session` needs `confirm=true`. Refused with 400 "Unexpected <name>": `description`,
  `receipt_email`, `setup_future_usage`, `statement_descriptor`, `automatic_payment_methods`.
  The PI has no `amount_received`; `latest_charge` is a whole Charge object, not an id;
  `capture_method` defaults to `automatic_async`.
* `expand` works on retrieve (`customer`, `payment_method`, up to 4 levels).
* `refunds.create(params={"payment_intent", "amount", "metadata"})`: `reason` is refused
  ("Unexpected reason"). Refunds are always `succeeded`; amounts are not checked against what
  is left (over-refunds pass), and a refund without `amount` refunds the whole original amount
  even after partial refunds. The sum shows in `latest_charge.amount_refunded`.
  `refunds.list(params={"payment_intent": pi})` works.
* Declines: 4000000000000002 is refused at *attach* (402) but charges fine when not attached;
  4000000000000341 attaches, then the PI create/confirm answers 402 (the error names the charge,
  not the PI) and the PI stays `requires_payment_method`, with a `payment_intent.payment_failed`
  event. 402 bodies say `type: invalid_request_error, code: card_declined`; the SDK still raises
  `stripe.CardError` (it maps by status).
* Errors are `{"error": {"type": "invalid_request_error", "message": "Bad request" | "Not
  Found" | "Unexpected x"}}` with no `code`/`param` (not Stripe's `resource_missing`).
* Auth: any `sk_...` key longer than 5 characters, as Bearer or Basic. `Idempotency-Key` is
  ignored (the same key twice makes two objects) and no `Idempotent-Replayed` header exists.
* Webhooks: `register_webhook` (form `url`, `secret`, optional `events[]`) on
  `POST /_config/webhooks/<id>`; they cannot be removed, only re-registered under the same id
  (e.g. with `events=["never.sent"]` to mute one). Each event is POSTed once, about 1 s after it
  happens, with no retries, to every registered URL: `payment_intent.succeeded`,
  `payment_intent.payment_failed`, `customer.created/updated/deleted` (no `charge.*`,
  `refund.*` or `checkout.session.*`). The body is indented JSON with sorted keys;
  `Stripe-Signature: t=<event.created>,v1=<hmac>` verifies with `stripe.Webhook.construct_event`.
  `data.object` is the whole PI, `metadata` included; `api_version` is `"2017-08-15"`.
* State is pickled to the fixed path `/tmp/localstripe.pickle` on every change: parallel
  instances overwrite one another's file (harmless with `--from-scratch`), and `/tmp` must be
  writable. It listens on `::` (dual stack), so IPv6 must be enabled.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_localstripe(timeout: float = 20.0) -> Iterator[str]:
    """Start a fresh localstripe on a free port; yield `http://127.0.0.1:<port>`."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "localstripe"),
               "--port", str(port), "--from-scratch"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(process, base_url, log, timeout)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(process: subprocess.Popen, base_url: str, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            # The only route that needs no key and changes no state.
            requests.get(f"{base_url}/js.stripe.com/v3/", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    log.seek(0)
    output = log.read().decode(errors="replace")
    raise RuntimeError(f"localstripe did not answer at {base_url}: {output[-2000:]}")


def register_webhook(base_url: str, webhook_id: str, url: str, secret: str,
                     events: list[str] | None = None) -> None:
    """Make localstripe POST its signed events to `url` (all events, or only `events`)."""
    data: list[tuple[str, str]] = [("url", url), ("secret", secret)]
    data += [("events[]", event) for event in events or ()]
    response = requests.post(f"{base_url}/_config/webhooks/{webhook_id}", data=data,
                             timeout=5)
    response.raise_for_status()
