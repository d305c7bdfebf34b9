"""What patients are sent: each lab's editable texts, their placeholders, and rendering.

Texts carry the lab name, patient name, amount, bill reference, expiry and the link: never the
link's description or anything clinical (DESIGN §1, features.md "health-data minimisation").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from .. import i18n
from ..filters import zoned_time
from ..models import Channel, Lab, OnlinePayment, utcnow
from ..money import format_money, format_money_code
from ..notify import whatsapp
from ..tokens import patient_url

KINDS = ("link", "reminder", "receipt")
PARTS = ("sms", "email_subject", "email_body")
KIND_LABELS = {"link": "New link", "reminder": "Reminder", "receipt": "Receipt"}
PART_LABELS = {"sms": "SMS", "email_subject": "Email subject", "email_body": "Email text"}

_DUE = ("lab_name", "patient_name", "amount", "bill_reference", "expires_at", "link")
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "link": _DUE,
    "reminder": _DUE,
    "receipt": ("lab_name", "patient_name", "amount", "bill_reference", "paid_at", "link"),
}
# A payment request without its link is useless to the patient.
REQUIRED = {("link", "sms"), ("link", "email_body"), ("reminder", "sms"),
            ("reminder", "email_body")}
MAX_LENGTH = {"sms": 480, "email_subject": 150, "email_body": 3000}

def N_(text: str) -> str:
    """Marks a text for the catalogs; translated when a message is made, in its language."""
    return text


DEFAULTS: dict[str, str] = {
    "link.sms": N_("{lab_name}: please pay {amount} for bill {bill_reference} by {expires_at}: "
                   "{link}"),
    "link.email_subject": N_("Payment link for bill {bill_reference} from {lab_name}"),
    "link.email_body": N_(
        "Hello {patient_name},\n\n"
        "{lab_name} has sent you a payment link for bill {bill_reference}.\n\n"
        "Amount due: {amount}\n"
        "Pay by: {expires_at}\n\n"
        "Pay securely here: {link}\n\n"
        "If you have already paid, please ignore this message."),
    "reminder.sms": N_("Reminder from {lab_name}: {amount} for bill {bill_reference} is due. "
                       "The link expires {expires_at}: {link}"),
    "reminder.email_subject": N_("Reminder: bill {bill_reference} from {lab_name}"),
    "reminder.email_body": N_(
        "Hello {patient_name},\n\n"
        "This is a reminder that {amount} for bill {bill_reference} from {lab_name} "
        "is still due.\n\n"
        "The payment link expires on {expires_at}.\n\n"
        "Pay securely here: {link}\n\n"
        "If you have already paid, please ignore this message."),
    "receipt.sms": N_("{lab_name}: we received {amount} for bill {bill_reference}. Thank you. "
                      "Receipt: {link}"),
    "receipt.email_subject": N_("Receipt for bill {bill_reference} from {lab_name}"),
    "receipt.email_body": N_(
        "Hello {patient_name},\n\n"
        "Thank you. {lab_name} received {amount} for bill {bill_reference} "
        "on {paid_at}.\n\n"
        "Your receipt: {link}"),
}

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# B105: a made-up token for message previews, as long as a real one.
SAMPLE_TOKEN = "Xq7Lm2Rt9Vb4Nc8Kd3Fh6Jw1Ps5Gz0Ya2Ue7Io4Tr9"  # nosec B105


class TemplateError(ValueError):
    """A text that cannot be used; the message is shown next to the field."""


def key(kind: str, part: str) -> str:
    return f"{kind}.{part}"


def check_text(kind: str, part: str, text: str) -> None:
    """Refuses unknown placeholders, stray braces, a missing {link} and overlong texts."""
    allowed = PLACEHOLDERS[kind]
    names = PLACEHOLDER.findall(text)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        shown = ", ".join("{" + n + "}" for n in dict.fromkeys(unknown))
        raise TemplateError(f"Unknown placeholder {shown}. You can use: "
                            + ", ".join("{" + n + "}" for n in allowed) + ".")
    if "{" in PLACEHOLDER.sub("", text) or "}" in PLACEHOLDER.sub("", text):
        raise TemplateError("Use braces only around a placeholder, for example {amount}.")
    if (kind, part) in REQUIRED and "link" not in names:
        raise TemplateError("Include {link}: without it the patient cannot pay.")
    if part == "email_subject" and ("\n" in text or "\r" in text):
        raise TemplateError("The subject must be one line.")
    if len(text) > MAX_LENGTH[part]:
        raise TemplateError(f"Keep it under {MAX_LENGTH[part]} characters "
                            f"(it has {len(text)}).")


def default_text(kind: str, part: str, language: str = i18n.DEFAULT) -> str:
    """The portal's own text in a language, from the catalogs (English when untranslated)."""
    return i18n.gettext_in(language, DEFAULTS[key(kind, part)])


def _kind_part(text_key: str) -> tuple[str, str]:
    kind, _, part = text_key.partition(".")
    return kind, part


def fill(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# --- a lab's settings, kept in Lab.message_templates (texts, receipts, SMS/DLT) ---------------

@dataclass
class MessageSettings:
    texts: dict[str, str] = field(default_factory=dict)  # only the lab's own changes, English
    translated: dict[str, dict[str, str]] = field(default_factory=dict)  # language -> texts
    receipt_channels: tuple[str, ...] = (Channel.EMAIL.value, Channel.SMS.value)
    sms_sender_id: str = ""
    dlt_entity_id: str = ""
    dlt_templates: dict[str, str] = field(default_factory=dict)  # kind -> DLT template id
    whatsapp_templates: dict[str, str] = field(default_factory=dict)  # kind -> approved name
    whatsapp_language: str = ""  # the templates' main language; empty: the lab's default
    whatsapp_languages: tuple[str, ...] = ()  # further languages the templates are approved in

    def whatsapp_language_for(self, language: str, lab_default: str = i18n.DEFAULT) -> str:
        """Meta's code of the template language to send: the link's when approved in it."""
        main = self.whatsapp_language or lab_default
        chosen = language if language in self.whatsapp_languages else main
        return whatsapp.TEMPLATE_LANGUAGES.get(chosen, "en")

    def own_texts(self, language: str) -> dict[str, str]:
        return self.texts if language == i18n.DEFAULT else self.translated.get(language, {})

    def text(self, kind: str, part: str, language: str = i18n.DEFAULT) -> str:
        return (self.own_texts(language).get(key(kind, part))
                or default_text(kind, part, language))

    def with_texts(self, language: str, texts: dict[str, str]) -> MessageSettings:
        """A copy whose texts in `language` are replaced; the other languages kept."""
        if language == i18n.DEFAULT:
            return replace(self, texts=dict(texts))
        return replace(self, translated={**self.translated, language: dict(texts)})

    def as_json(self) -> dict[str, Any]:
        translations = {lang: dict(t) for lang, t in self.translated.items() if t}
        return {"texts": dict(self.texts), **({"translations": translations} if translations
                                              else {}),
                "receipt_channels": list(self.receipt_channels),
                "sms": {"sender_id": self.sms_sender_id, "dlt_entity_id": self.dlt_entity_id,
                        "dlt_templates": dict(self.dlt_templates)},
                **({"whatsapp": {"templates": dict(self.whatsapp_templates),
                                 "language": self.whatsapp_language,
                                 "languages": list(self.whatsapp_languages)}}
                   if self.whatsapp_templates or self.whatsapp_language
                   or self.whatsapp_languages else {})}


def settings_of(lab: Lab) -> MessageSettings:
    stored = lab.message_templates or {}
    sms = stored.get("sms") or {}
    chat = stored.get("whatsapp") or {}
    translated = {lang: {k: v for k, v in (texts or {}).items() if k in DEFAULTS and v}
                  for lang, texts in (stored.get("translations") or {}).items()
                  if lang in i18n.LANGUAGES and lang != i18n.DEFAULT}
    return MessageSettings(
        texts={k: v for k, v in (stored.get("texts") or {}).items() if k in DEFAULTS and v},
        translated={lang: texts for lang, texts in translated.items() if texts},
        receipt_channels=tuple(stored.get("receipt_channels",
                                          MessageSettings.receipt_channels)),
        sms_sender_id=sms.get("sender_id", ""), dlt_entity_id=sms.get("dlt_entity_id", ""),
        dlt_templates=dict(sms.get("dlt_templates") or {}),
        whatsapp_templates={k: v for k, v in (chat.get("templates") or {}).items()
                            if k in KINDS and v},
        whatsapp_language=chat.get("language") or "",
        whatsapp_languages=tuple(lang for lang in chat.get("languages") or ()
                                 if lang in i18n.LANGUAGES))


def share_on_whatsapp(lab: Lab, link: OnlinePayment, base_url: str) -> str:
    """A wa.me address that opens WhatsApp on the patient's chat with the lab's link text."""
    text = render_for(lab, link, "link", base_url).chat
    number = (link.patient_phone or "").lstrip("+")
    return f"https://wa.me/{number}?" + urlencode({"text": text}, quote_via=quote)


def whatsapp_ready(lab: Lab) -> bool:
    """Links can go by WhatsApp once the lab has named its approved link template."""
    return bool(settings_of(lab).whatsapp_templates.get("link"))


def save_settings(lab: Lab, settings: MessageSettings, reminder_hours: list[int]) -> None:
    """Stores only texts that differ from the defaults, so better defaults reach every lab."""
    settings.texts = {k: v for k, v in settings.texts.items() if v and v != DEFAULTS.get(k)}
    settings.translated = {
        lang: kept for lang, texts in settings.translated.items()
        if (kept := {k: v for k, v in texts.items()
                     if k in DEFAULTS and v and v != default_text(*_kind_part(k), lang)})}
    lab.message_templates = settings.as_json()  # a new dict: JSON columns track assignment only
    lab.reminder_hours_before = sorted(set(reminder_hours), reverse=True)


# --- rendering ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    kind: str
    subject: str
    text: str  # the email's plain text
    sms: str
    link: str
    language: str = i18n.DEFAULT
    chat: str = ""  # the SMS text with the amount as the language writes it, for WhatsApp
    whatsapp_parameters: tuple[str, ...] = ()  # the template's {{1}}, {{2}}, ...: PLACEHOLDERS


def patient_link(base_url: str, link: OnlinePayment, kind: str) -> str:
    url = patient_url(base_url, link.token)
    return url + "/receipt" if kind == "receipt" else url


def language_of(lab: Lab, link: OnlinePayment) -> str:
    return i18n.normalize(link.language) or i18n.normalize(lab.default_language) or i18n.DEFAULT


def values_for(lab: Lab, link: OnlinePayment, kind: str, base_url: str,
               language: str = i18n.DEFAULT) -> dict[str, str]:
    paid = kind == "receipt"
    locale = i18n.format_locale(language, lab.locale)
    return {
        "lab_name": lab.name,
        "patient_name": link.patient_name or i18n.gettext_in(language, "patient"),
        "amount": format_money(link.amount_paid if paid else link.outstanding, link.currency,
                               locale),
        "amount_code": format_money_code(link.amount_paid if paid else link.outstanding,
                                         link.currency, locale),
        "bill_reference": link.bill_reference,
        "expires_at": _plain(zoned_time(link.expires_at, lab.timezone, locale,
                                        with_zone=False)),
        "paid_at": _plain(zoned_time(link.paid_at or utcnow(), lab.timezone, locale,
                                     with_zone=False)),
        "link": patient_link(base_url, link, kind),
    }


def sample_values(lab: Lab, kind: str, base_url: str, now: datetime | None = None,
                  language: str = i18n.DEFAULT) -> dict[str, str]:
    """What a preview shows: the lab's own name, currency and time zone, a made-up bill."""
    now = now or utcnow()
    sample = OnlinePayment(lab_id=lab.id, token=SAMPLE_TOKEN, amount=123450,
                           currency=lab.currency, amount_paid=123450 if kind == "receipt" else 0,
                           bill_reference="B-1001",
                           expires_at=now + timedelta(hours=lab.default_expiry_hours),
                           paid_at=now)
    values = values_for(lab, sample, kind, base_url, language)
    values["patient_name"] = "Asha Rao"
    return values


def render(settings: MessageSettings, kind: str, values: dict[str, str],
           language: str = i18n.DEFAULT) -> Message:
    # SMS: plain spaces and the currency code; a symbol or a no-break space forces UCS-2.
    sms_values = {k: _plain(v) for k, v in values.items()}
    sms_values["amount"] = sms_values.pop("amount_code", sms_values["amount"])
    subject = " ".join(fill(settings.text(kind, "email_subject", language), values).split())
    return Message(kind=kind, subject=subject[:250],
                   text=fill(settings.text(kind, "email_body", language), values).strip() + "\n",
                   sms=fill(settings.text(kind, "sms", language), sms_values).strip(),
                   link=values["link"], language=language,
                   chat=fill(settings.text(kind, "sms", language), values).strip(),
                   # Meta refuses a parameter with a newline, a tab or a run of spaces.
                   whatsapp_parameters=tuple(" ".join(values[name].split()) or "-"
                                             for name in PLACEHOLDERS[kind]))


def render_for(lab: Lab, link: OnlinePayment, kind: str, base_url: str,
               settings: MessageSettings | None = None) -> Message:
    """The message in the link's language (the lab's default for links made before 0008);
    `settings`: the lab's, parsed already (the worker parses them once per batch)."""
    language = language_of(lab, link)
    return render(settings or settings_of(lab), kind,
                  values_for(lab, link, kind, base_url, language), language)


def _plain(text: str) -> str:
    return text.replace("\u00a0", " ").replace("\u202f", " ")


# --- SMS length, for the preview ---------------------------------------------------------------

GSM7_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
                 "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsLength:
    characters: int
    segments: int
    unicode: bool


def sms_length(text: str) -> SmsLength:
    """Characters and billable parts: 160/153 for GSM-7, 70/67 for UCS-2 (any other letter)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        single, multi, unicode = 160, 153, False
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, unicode = 70, 67, True
    segments = 1 if units <= single else math.ceil(units / multi)
    return SmsLength(characters=len(text), segments=segments, unicode=unicode)


@dataclass(frozen=True)
class Preview:
    message: Message
    sms_length: SmsLength
    dlt_text: str  # the SMS as registered on India's DLT platform: each value a {#var#}


def previews(lab: Lab, settings: MessageSettings, base_url: str,
             now: datetime | None = None, language: str = i18n.DEFAULT) -> dict[str, Preview]:
    """Every kind rendered with the lab's own name, currency and time zone."""
    result = {}
    for kind in KINDS:
        message = render(settings, kind, sample_values(lab, kind, base_url, now, language),
                         language)
        result[kind] = Preview(message=message, sms_length=sms_length(message.sms),
                               dlt_text=PLACEHOLDER.sub("{#var#}",
                                                        settings.text(kind, "sms", language)))
    return result
