"""WhatsApp through Meta's WhatsApp Business Cloud API: approved template messages only.

A business may open a conversation with a patient only with a template approved by Meta, so
every message is `type: template`, its body variables filled in a fixed order (`BODY_ORDER`).
Settings: `PORTAL_WHATSAPP_ACCESS_TOKEN` (a system user's token), `PORTAL_WHATSAPP_PHONE_NUMBER_ID`
(the sending number's id, not the number), `PORTAL_WHATSAPP_API_VERSION` (`v21.0`) and
`PORTAL_WHATSAPP_API_BASE` (`https://graph.facebook.com`, for fakes). Without a token the message
is logged, phone masked, and not sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import requests

from . import DeliveryError, PermanentError
from .sms import masked_phone

log = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"

# Meta's error codes worth another try: throttling, and its own transient failures. Our own
# token or permissions (0, 10, 190, 200) are retried too: an admin can mend them in time.
RETRYABLE_CODES = frozenset({0, 1, 2, 4, 10, 190, 200, 80007, 130429, 131000, 131016,
                             131048, 131056, 133004})

# Our language codes -> Meta's template language codes.
TEMPLATE_LANGUAGES = {"en": "en", "hi": "hi", "ta": "ta", "te": "te", "bn": "bn", "mr": "mr",
                      "ar": "ar", "zh-Hant": "zh_HK", "fil": "fil", "es": "es"}


@dataclass(frozen=True)
class TemplateMessage:
    to: str  # E.164, "+919876543210"
    template: str  # the approved template's name
    language: str  # Meta's code, "en", "zh_HK"
    parameters: tuple[str, ...]  # the body's {{1}}, {{2}}, ... in order
    log_text: str  # what the log may show: the link's token cut short


def configured(config) -> bool:
    return bool(config.get("PORTAL_WHATSAPP_ACCESS_TOKEN"))


def request_body(message: TemplateMessage) -> dict:
    """The Cloud API's `POST /{phone-number-id}/messages` body for one template message."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to.lstrip("+"),
        "type": "template",
        "template": {
            "name": message.template,
            "language": {"code": message.language},
            "components": [{"type": "body", "parameters": [
                {"type": "text", "text": value} for value in message.parameters]}],
        },
    }


def send_whatsapp(config, message: TemplateMessage) -> str | None:
    """Sends one template message; returns Meta's message id (`wamid...`)."""
    if not configured(config):
        log.info("WhatsApp (no PORTAL_WHATSAPP_ACCESS_TOKEN, not sent) to %s, template %s: %s",
                 masked_phone(message.to), message.template, message.log_text)
        return None
    phone_number_id = config.get("PORTAL_WHATSAPP_PHONE_NUMBER_ID")
    if not phone_number_id:
        raise PermanentError("WhatsApp is not configured: set PORTAL_WHATSAPP_PHONE_NUMBER_ID")
    if not message.template:
        raise PermanentError("The lab has no approved WhatsApp template for this message: "
                             "an admin sets its name on the Messages page.")
    base = (config.get("PORTAL_WHATSAPP_API_BASE") or DEFAULT_API_BASE).rstrip("/")
    version = config.get("PORTAL_WHATSAPP_API_VERSION") or DEFAULT_API_VERSION
    url = f"{base}/{version}/{phone_number_id}/messages"
    headers = {"Authorization": f"Bearer {config['PORTAL_WHATSAPP_ACCESS_TOKEN']}",
               "Accept": "application/json"}
    try:
        response = requests.post(url, json=request_body(message), headers=headers,
                                 timeout=(5, 20), allow_redirects=False)
    except requests.RequestException as exc:
        raise DeliveryError(f"WhatsApp: {type(exc).__name__}") from None
    answer = _json(response)
    if response.status_code >= 300:
        raise _error(response.status_code, answer)
    messages = answer.get("messages") if isinstance(answer, dict) else None
    if not (isinstance(messages, list) and messages and isinstance(messages[0], dict)):
        raise DeliveryError(f"WhatsApp answered HTTP {response.status_code} without a message id")
    return str(messages[0].get("id") or "") or None


def _json(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error(status: int, answer: object) -> DeliveryError:
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    title = str(error.get("error_user_title") or error.get("message") or "")[:200]
    text = f"WhatsApp HTTP {status}" + (f": error {code}" if code is not None else "") + \
        (f" {title}" if title else "")
    if status == 429 or status >= 500 or (code is not None and code in RETRYABLE_CODES):
        return DeliveryError(text)
    return PermanentError(text)
