"""The lab's message texts, reminder policy, receipts and SMS (DLT) settings."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import Length, Optional, Regexp, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from .. import i18n
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..services import messages
from ..services.messages import KINDS, PARTS, MessageSettings, TemplateError
from ..services.notifications import MAX_REMINDER_HOURS, MAX_REMINDERS

DIGITS = Regexp(r"^\d*$", message=_l("Digits only."))
# Meta's template names: lowercase letters, digits and underscores.
TEMPLATE_NAME = Regexp(r"^[a-z0-9_]*$", message=_l("Lowercase letters, digits and _ only, "
                                                    "as the template is named in WhatsApp "
                                                    "Manager."))


class MessagesForm(FlaskForm):
    reminder_hours = StringField(
        _l("Remind the patient, hours before the link expires"),
        validators=[Optional(), Length(max=50)],
        description=_l("For example “24, 2”: one reminder a day before, one two hours before. "
                    "Leave empty for no reminders. Reminders go the way the link was sent "
                    "and never for a paid, cancelled or expired link."))
    receipt_by_email = BooleanField(_l("Email a receipt when a link is paid"))
    receipt_by_sms = BooleanField(_l("Send a receipt by SMS when a link is paid"))
    sms_sender_id = StringField(_l("SMS sender id"), validators=[
        Optional(), Length(max=11),
        Regexp(r"^[A-Za-z0-9]*$", message=_l("Letters and digits only."))],
        description=_l("The header registered on the DLT platform, for example “ACMELB”."))
    dlt_entity_id = StringField(_l("DLT entity id"),
                                validators=[Optional(), Length(max=30), DIGITS])
    receipt_by_whatsapp = BooleanField(_l("Send a receipt by WhatsApp when a link is paid"))
    whatsapp_language = SelectField(
        _l("Language the templates were approved in"), validate_choice=False,  # unknown: lab's
        choices=[])
    whatsapp_languages = SelectMultipleField(
        _l("Also approved in"), choices=i18n.staff_choices(),
        widget=ListWidget(prefix_label=False), option_widget=CheckboxInput(),
        description=_l("A link in one of these languages gets the template in its language; "
                       "any other link gets the main language."))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.whatsapp_language.choices = {"": _s("The lab's default language"),
                                          **i18n.staff_choices()}
        self.hours: list[int] = []

    def text_field(self, kind: str, part: str):
        return self[f"{kind}_{part}"]

    def dlt_field(self, kind: str):
        return self[f"dlt_{kind}"]

    def whatsapp_field(self, kind: str):
        return self[f"whatsapp_{kind}"]

    def load(self, lab, settings: MessageSettings, language: str = "en") -> None:
        self.reminder_hours.data = ", ".join(str(h) for h in lab.reminder_hours_before or [])
        self.receipt_by_email.data = "email" in settings.receipt_channels
        self.receipt_by_sms.data = "sms" in settings.receipt_channels
        self.receipt_by_whatsapp.data = "whatsapp" in settings.receipt_channels
        self.whatsapp_language.data = settings.whatsapp_language
        self.whatsapp_languages.data = list(settings.whatsapp_languages)
        self.sms_sender_id.data = settings.sms_sender_id
        self.dlt_entity_id.data = settings.dlt_entity_id
        for kind in KINDS:
            self.dlt_field(kind).data = settings.dlt_templates.get(kind, "")
            self.whatsapp_field(kind).data = settings.whatsapp_templates.get(kind, "")
            for part in PARTS:
                self.text_field(kind, part).data = settings.text(kind, part, language)

    def validate_reminder_hours(self, field):
        words = [w for w in re.split(r"[,\s]+", field.data or "") if w]
        try:
            hours = [int(w) for w in words]
        except ValueError:
            raise ValidationError(_s("Enter whole hours, separated by commas.")) from None
        if any(h < 1 or h > MAX_REMINDER_HOURS for h in hours):
            raise ValidationError(f"Each reminder must be 1 to {MAX_REMINDER_HOURS} hours "
                                  "before expiry.")
        if len(set(hours)) > MAX_REMINDERS:
            raise ValidationError(f"At most {MAX_REMINDERS} reminders.")
        self.hours = sorted(set(hours), reverse=True)

    def validate(self, extra_validators=None):
        ok = super().validate(extra_validators)
        if self.receipt_by_whatsapp.data and not (self.whatsapp_field("receipt").data or
                                                  "").strip():
            self.whatsapp_field("receipt").errors.append(
                _s("Enter the receipt's template to send receipts by WhatsApp."))
            ok = False
        for kind in KINDS:
            for part in PARTS:
                field = self.text_field(kind, part)
                text = (field.data or "").replace("\r\n", "\n").strip()
                field.data = text
                if not text:
                    continue  # empty: the default text
                try:
                    messages.check_text(kind, part, text)
                except TemplateError as exc:
                    field.errors.append(str(exc))
                    ok = False
        return ok

    def to_settings(self, saved: MessageSettings | None = None,
                    language: str = "en") -> MessageSettings:
        """The form's settings; texts are those of `language`, the other languages' kept."""
        receipts = tuple(c for c, on in (("email", self.receipt_by_email.data),
                                         ("sms", self.receipt_by_sms.data),
                                         ("whatsapp", self.receipt_by_whatsapp.data)) if on)
        texts = {messages.key(kind, part): self.text_field(kind, part).data
                 for kind in KINDS for part in PARTS if self.text_field(kind, part).data}
        kept = saved or MessageSettings()
        return MessageSettings(
            texts=texts if language == "en" else dict(kept.texts),
            translated={**kept.translated, language: texts} if language != "en"
            else dict(kept.translated),
            receipt_channels=receipts, sms_sender_id=(self.sms_sender_id.data or "").strip(),
            dlt_entity_id=(self.dlt_entity_id.data or "").strip(),
            dlt_templates={kind: (self.dlt_field(kind).data or "").strip() for kind in KINDS
                           if (self.dlt_field(kind).data or "").strip()},
            whatsapp_templates={kind: (self.whatsapp_field(kind).data or "").strip()
                                for kind in KINDS
                                if (self.whatsapp_field(kind).data or "").strip()},
            whatsapp_language=(self.whatsapp_language.data
                               if self.whatsapp_language.data in i18n.LANGUAGES else ""),
            whatsapp_languages=tuple(self.whatsapp_languages.data or ()))


for _kind in KINDS:
    _label = messages.KIND_LABELS[_kind]
    _names = [f"{_kind}_{part}" for part in PARTS] + [f"dlt_{_kind}", f"whatsapp_{_kind}"]
    if any(hasattr(MessagesForm, n) for n in _names):  # a field would hide another
        raise RuntimeError(f"MessagesForm already has one of {_names}")
    setattr(MessagesForm, f"{_kind}_sms", TextAreaField(
        f"{_label}: SMS", validators=[Optional()],
        description=_l("Placeholders: ") + ", ".join("{" + p + "}"
                                                 for p in messages.PLACEHOLDERS[_kind]) + "."))
    setattr(MessagesForm, f"{_kind}_email_subject", StringField(
        f"{_label}: email subject", validators=[Optional()]))
    setattr(MessagesForm, f"{_kind}_email_body", TextAreaField(
        f"{_label}: email text", validators=[Optional()],
        description=_l("Plain text; a blank line starts a new paragraph. Empty: the default.")))
    setattr(MessagesForm, f"dlt_{_kind}", StringField(
        f"DLT template id of the {_label.lower()} SMS",
        validators=[Optional(), Length(max=30), DIGITS]))
    setattr(MessagesForm, f"whatsapp_{_kind}", StringField(
        f"WhatsApp template of the {_label.lower()}",
        validators=[Optional(), Length(max=512), TEMPLATE_NAME]))
