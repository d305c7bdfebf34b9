"""The new-link form: every field checked, messages next to the field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    EmailField,
    SelectField,
    StringField,
    TelField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp, ValidationError

from .. import i18n
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..models import utcnow
from ..money import COMMON_CURRENCIES, MoneyError, parse_amount
from ..phones import to_e164
from ..services import messages


class NewLinkForm(FlaskForm):
    patient_name = StringField(_l("Patient name"), validators=[
        DataRequired(message=_l("Enter the patient's name.")), Length(max=200)])
    phone = TelField(_l("Mobile number"), validators=[Optional(), Length(max=30)],
                     description=_l("With country code, or a local number."))
    email = EmailField(_l("Email"), validators=[
        Optional(), Length(max=254), Email(message=_l("Enter a valid email address."),
                                           check_deliverability=False)])
    amount = StringField(_l("Amount"), validators=[DataRequired(message=_l("Enter an amount."))])
    currency = SelectField(_l("Currency"), choices=list(COMMON_CURRENCIES))
    bill_reference = StringField(_l("Bill reference"), validators=[
        DataRequired(message=_l("Enter the bill reference.")), Length(max=100)])
    description = TextAreaField(_l("Description (optional)"), validators=[Optional(),
                                                                      Length(max=500)],
                                description=_l("Shown to the patient. No test names."))
    expires_at = DateTimeLocalField(_l("Link expires"), format="%Y-%m-%dT%H:%M",
                                    validators=[DataRequired(message=_l("Choose when the link "
                                                                     "expires."))])
    allow_partial = BooleanField(_l("Allow part payments"))
    language = SelectField(
        _l("Patient's language"),
        choices=i18n.staff_choices(), validate_choice=False,  # none or unknown: the lab's
        description=_l("The pay page, SMS and email are in this language; the patient can "
                    "switch on the page."))
    at_desk = BooleanField(
        _l("The patient is at the desk: show a QR code to scan, send nothing"))
    send_sms = BooleanField(_l("Send by SMS"), default=True)
    send_email = BooleanField(_l("Send by email"), default=True)
    send_whatsapp = BooleanField(_l("Send by WhatsApp"), default=False)
    # Asked only when the mobile number or email is already another patient's: "new", or the
    # id of the patient record this link belongs to ("same person").
    # A plain field (not hidden_tag's): the template writes it as radios or a hidden input.
    patient_match = StringField(validators=[Optional(), Regexp(r"^(new|[1-9][0-9]{0,9})$",
                                                               message=_l("Choose again."))])
    rename_patient = BooleanField(_l("Also change the name on their record to the name above"))

    def __init__(self, *args, lab, **kwargs):
        super().__init__(*args, **kwargs)
        self.lab = lab
        self.amount_minor: int | None = None
        self.phone_e164: str | None = None
        self.expires_at_utc: datetime | None = None
        self.whatsapp_ready = messages.whatsapp_ready(lab)
        if lab.currency not in COMMON_CURRENCIES:
            self.currency.choices.insert(0, lab.currency)

    def validate_amount(self, field):
        try:
            self.amount_minor = parse_amount(field.data, self.currency.data or self.lab.currency)
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_phone(self, field):
        if not field.data:
            return
        self.phone_e164 = to_e164(field.data, self.lab.country)
        if self.phone_e164 is None:
            raise ValidationError(_s("Enter a valid mobile number."))

    def validate_expires_at(self, field):
        local = field.data.replace(tzinfo=ZoneInfo(self.lab.timezone))
        if local <= utcnow():
            raise ValidationError(_s("The expiry must be in the future."))
        if (local - utcnow()).days > 90:
            raise ValidationError(_s("A link can stay open for at most 90 days."))
        self.expires_at_utc = local

    @property
    def notify(self) -> tuple[str, ...]:
        """The ticked channels that have somewhere to go: an empty contact is left out."""
        if self.at_desk.data:
            return ()
        channels = []
        if self.send_sms.data and self.phone.data:
            channels.append("sms")
        if self.send_email.data and self.email.data:
            channels.append("email")
        if self.send_whatsapp.data and self.phone.data and self.whatsapp_ready:
            channels.append("whatsapp")
        return tuple(channels)

    @property
    def chosen_customer_id(self) -> int | None:
        value = self.patient_match.data or ""
        return int(value) if value.isdigit() else None

    @property
    def new_patient(self) -> bool:
        return self.patient_match.data == "new"

    def validate(self, extra_validators=None):
        """Every field's message in one round: the contact check does not wait for the rest."""
        ok = super().validate(extra_validators)
        if not (self.at_desk.data or self.phone.data or self.email.data):
            self.phone.errors = [*self.phone.errors,
                                 _s("Enter a mobile number or an email to send the link to, "
                                    "or tick “The patient is at the desk”.")]
            return False
        return ok
