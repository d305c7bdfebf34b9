"""SMS backends, chosen by `PORTAL_SMS_BACKEND`: `console` (default), `twilio`, `http`.

- `console` logs the message (the link's token cut short) and sends nothing.
- `twilio` uses the official SDK: `PORTAL_TWILIO_ACCOUNT_SID`, `PORTAL_TWILIO_AUTH_TOKEN` and
  `PORTAL_TWILIO_FROM` (a number, or a Messaging Service SID `MG...`);
  `PORTAL_TWILIO_API_BASE` points it at a fake or a proxy.
- `http` POSTs JSON to `PORTAL_SMS_HTTP_URL` for Indian providers (DLT rules): each lab's
  sender id (header), DLT entity id and the DLT template id of each message. The key
  `PORTAL_SMS_HTTP_API_KEY` goes in the header named by `PORTAL_SMS_HTTP_AUTH_HEADER`
  (default `Authorization`; put `Bearer ...` in the key if the provider wants that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from . import DeliveryError, PermanentError

log = logging.getLogger(__name__)

BACKENDS = ("console", "twilio", "http")
RETRYABLE_4XX = (401, 403, 408, 409, 429)  # our credentials, or the provider is busy


@dataclass(frozen=True)
class Sms:
    to: str  # E.164, "+919876543210"
    text: str
    log_text: str  # the text with the link's token cut short
    kind: str  # link | reminder | receipt
    reference: str  # ours, unique per notification: lets a provider drop a duplicate
    sender_id: str = ""
    dlt_entity_id: str = ""
    dlt_template_id: str = ""


def masked_phone(number: str) -> str:
    return number[:3] + "*" * max(len(number) - 7, 0) + number[-4:] if len(number) > 7 else "***"


def backend_name(config) -> str:
    return (config.get("PORTAL_SMS_BACKEND") or "console").strip().lower()


def send_sms(config, sms: Sms) -> str | None:
    """Sends through the configured backend; returns the provider's message id when it has one."""
    backend = backend_name(config)
    if backend == "console":
        log.info("SMS (console backend, not sent) to %s: %s", masked_phone(sms.to), sms.log_text)
        return None
    if backend == "twilio":
        return _twilio(config, sms)
    if backend == "http":
        return _http(config, sms)
    raise PermanentError(f"PORTAL_SMS_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")


def _required(config, *names: str) -> list[str]:
    missing = [n for n in names if not config.get(n)]
    if missing:
        raise PermanentError(f"SMS backend is not configured: set {', '.join(missing)}")
    return [config[n] for n in names]


def _twilio(config, sms: Sms) -> str:
    from twilio.base.exceptions import TwilioException, TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    sid, token, sender = _required(config, "PORTAL_TWILIO_ACCOUNT_SID",
                                   "PORTAL_TWILIO_AUTH_TOKEN", "PORTAL_TWILIO_FROM")
    http_client = TwilioHttpClient(timeout=20)
    client = Client(sid, token, http_client=http_client)
    base = config.get("PORTAL_TWILIO_API_BASE")
    if base:
        client.api.base_url = base  # every Messages call goes through the Api domain
        client.edge = client.region = None  # which would rewrite the host
    origin = ({"messaging_service_sid": sender} if sender.startswith("MG")
              else {"from_": sender})
    try:
        message = client.messages.create(to=sms.to, body=sms.text, **origin)
    except TwilioRestException as exc:
        error = f"Twilio HTTP {exc.status}: {exc.code} {exc.msg}"
        if 400 <= exc.status < 500 and exc.status not in RETRYABLE_4XX:
            raise PermanentError(error) from None
        raise DeliveryError(error) from None
    except (TwilioException, requests.RequestException) as exc:
        raise DeliveryError(f"Twilio: {type(exc).__name__}: {exc}") from None
    finally:
        if http_client.session is not None:
            http_client.session.close()
    return message.sid


def _http(config, sms: Sms) -> str | None:
    (url,) = _required(config, "PORTAL_SMS_HTTP_URL")
    if not sms.sender_id:
        raise PermanentError("The lab has no SMS sender id: an admin sets it on the "
                             "Messages page.")
    if not sms.dlt_template_id:
        raise PermanentError(f"The lab has no DLT template id for the {sms.kind} SMS: "
                             "an admin sets it on the Messages page.")
    headers = {"Accept": "application/json"}
    if config.get("PORTAL_SMS_HTTP_API_KEY"):
        header = config.get("PORTAL_SMS_HTTP_AUTH_HEADER") or "Authorization"
        headers[header] = config["PORTAL_SMS_HTTP_API_KEY"]
    body = {"to": sms.to.lstrip("+"), "sender": sms.sender_id, "message": sms.text,
            "dlt_entity_id": sms.dlt_entity_id, "dlt_template_id": sms.dlt_template_id,
            "reference": sms.reference}
    try:
        response = requests.post(url, json=body, headers=headers, timeout=(5, 20),
                                 allow_redirects=False)
    except requests.RequestException as exc:
        raise DeliveryError(f"SMS provider: {type(exc).__name__}") from None
    if response.status_code >= 300:
        error = f"SMS provider answered HTTP {response.status_code}"
        if 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX:
            raise PermanentError(error)
        raise DeliveryError(error)
    try:
        answer = response.json()
    except ValueError:
        return None
    return str(answer.get("id") or answer.get("message_id") or "") or None \
        if isinstance(answer, dict) else None
