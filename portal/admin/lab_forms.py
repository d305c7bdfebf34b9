"""The lab's own settings: every field checked, messages next to the field."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import BooleanField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, ValidationError

from .. import i18n
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..models import Lab
from ..money import MoneyError, is_known_currency, major_string, parse_amount
from ..services import lab_settings
from ..services.lab_settings import MAX_LOGO_BYTES, LabSettings, Logo, SettingsError


def _checked(check):
    """A WTForms validator from one of lab_settings' checks."""
    def validator(form, field):
        try:
            check(field.data)
        except SettingsError as exc:
            raise ValidationError(str(exc)) from None
    return validator


class LabForm(FlaskForm):
    name = StringField(_l("Lab name"), validators=[
        DataRequired(message=_l("Enter the lab's name.")), Length(max=200)],
        description=_l("Shown to patients on the pay page, in messages and receipts."))
    currency = StringField(_l("Currency"), validators=[
        DataRequired(message=_l("Enter a currency code.")), Length(max=3)],
        description=_l("The three-letter ISO 4217 code of new links, for example INR, AED or "
                    "USD. Links already made keep their own currency."))
    timezone = SelectField(_l("Time zone"), choices=[], validate_choice=False,
                           description=_l("Times on every page and message are shown in it."))
    locale = SelectField(
        _l("Number and date format"), choices=[], validate_choice=False,
        description=_l("How amounts and dates are written, for example English (India) groups "
                    "amounts in lakhs: ₹1,23,450.00. Patients reading another language get "
                    "that language's format for the same country."))
    default_language = SelectField(
        _l("Patients' language"), choices=i18n.staff_choices(), validate_choice=False,
        description=_l("New links, their messages and pages start in this language; staff can "
                    "choose another per link, and patients can switch on the page."))
    default_expiry_hours = IntegerField(
        _l("Links expire after (hours)"),
        validators=[InputRequired(message=_l("Enter a number of hours.")),
                    NumberRange(min=1, max=lab_settings.MAX_EXPIRY_HOURS,
                                message=f"Enter 1 to {lab_settings.MAX_EXPIRY_HOURS} hours "
                                        "(90 days).")],
        description=_l("The expiry a new link starts with; staff can change it per link."))
    reminder_hours = StringField(
        _l("Remind the patient, hours before the link expires"),
        validators=[Length(max=50), _checked(lab_settings.parse_reminder_hours)],
        description=_l("For example “24, 2”; at most three. Leave empty for no reminders. "
                    "The same setting as on the Messages page."))
    refund_threshold = StringField(
        _l("Refunds above this amount need a second person"),
        validators=[Length(max=30)],
        description=_l("In the lab's currency, for example 5000. An admin other than the one who "
                    "asked must approve a larger refund. Leave empty: no approval needed."))
    min_part_payment = StringField(
        _l("Smallest part payment"),
        validators=[Length(max=30)],
        description=_l("In the lab's currency, for example 500. On links that allow part "
                       "payments, the patient may pay any amount from this up to what is still "
                       "owed. Leave empty: any amount."))
    refund_reasons = TextAreaField(
        _l("Refund reasons"), validators=[Length(max=5000),
                                      _checked(lab_settings.parse_refund_reasons)],
        description=_l("One a line, offered when staff refund, for example “Test cancelled”."))
    address = TextAreaField(
        _l("Postal address"), validators=[Length(max=1000), _checked(lab_settings.check_address)],
        description=_l("One line each, as patients should read it on receipts and on the pages "
                       "of links that cannot be paid."))
    phone = StringField(
        _l("Phone for patients"), validators=[Length(max=30)],
        description=_l("The number patients call about a bill, for example +91 80 4567 8900. "
                       "Shown on receipts and on expired or cancelled links."))
    email = StringField(
        _l("Email for patients"), validators=[Length(max=254),
                                               _checked(lab_settings.check_email)],
        description=_l("Shown on receipts, for example billing@lab.example."))
    brand_color = StringField(
        _l("Brand colour"), validators=[Length(max=7), _checked(lab_settings.check_brand_color)],
        description=_l("For the pay page's header and Pay button, as #rrggbb, for example "
                    "#0b5cad. White text must stay readable on it (contrast at least 4.5:1). "
                    "Leave empty for the portal's blue."))
    logo = FileField(
        _l("Logo"),
        description=f"A PNG, JPEG or WebP image of at most {MAX_LOGO_BYTES // 1024} KB (not "
                    "SVG), shown instead of the lab's name at the top of the pay page. "
                    "The portal keeps it and serves it itself. Choose no file to keep the "
                    "current logo.")
    remove_logo = BooleanField(_l("Remove logo (show the lab's name instead)"))

    def __init__(self, *args, current_timezone: str, country: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.country = country  # a phone without a prefix is read in the lab's country
        self.phone_e164: str | None = None
        names = lab_settings.timezone_names()
        if current_timezone not in names:  # e.g. 'Etc/GMT-4' from `portal lab create`: kept
            names.insert(0, current_timezone)
        self.timezone.choices = names
        self.locale.choices = lab_settings.locale_choices()
        self.threshold_minor: int | None = None
        self.min_part_minor: int | None = None
        self.new_logo: Logo | None = None

    def load(self, lab: Lab) -> None:
        self.name.data = lab.name
        self.currency.data = lab.currency
        self.timezone.data = lab.timezone
        self.locale.data = lab.locale
        self.default_language.data = lab.default_language
        if lab.locale not in self.locale.choices:  # e.g. set by `portal lab create`: kept
            self.locale.choices = {lab.locale: lab.locale, **self.locale.choices}
        self.default_expiry_hours.data = lab.default_expiry_hours
        self.reminder_hours.data = ", ".join(str(h) for h in lab.reminder_hours_before or [])
        self.refund_threshold.data = ("" if lab.refund_approval_threshold is None
                                      else major_string(lab.refund_approval_threshold,
                                                        lab.currency))
        self.refund_reasons.data = "\n".join(lab.refund_reasons or [])
        self.min_part_payment.data = ("" if lab.min_part_payment is None
                                      else major_string(lab.min_part_payment, lab.currency))
        self.brand_color.data = lab.brand_color or ""
        self.address.data = lab.address or ""
        self.phone.data = lab.phone or ""
        self.email.data = lab.email or ""

    def validate_phone(self, field):
        try:
            self.phone_e164 = lab_settings.check_phone(field.data, self.country)
        except SettingsError as exc:
            raise ValidationError(str(exc)) from None

    def validate_currency(self, field):
        field.data = (field.data or "").strip().upper()
        if not is_known_currency(field.data):
            raise ValidationError(_s("Enter a three-letter ISO 4217 currency code, for example "
                                  "INR."))

    def validate_timezone(self, field):
        if field.data not in self.timezone.choices:
            raise ValidationError(_s("Choose a time zone from the list, for example Asia/Kolkata."))

    def validate_locale(self, field):
        if field.data and field.data not in self.locale.choices:
            try:
                field.data = lab_settings.check_locale(field.data)
            except SettingsError as exc:
                raise ValidationError(str(exc)) from None

    def validate_logo(self, field):
        upload = field.data
        self.new_logo = None
        if upload is None or isinstance(upload, str) or not upload.filename:
            return  # no file chosen: the logo stays as it is
        if self.remove_logo.data:
            raise ValidationError(_s("Either choose a new logo or tick “Remove logo”, not both."))
        try:
            self.new_logo = lab_settings.check_logo(upload.stream.read(MAX_LOGO_BYTES + 1))
        except SettingsError as exc:
            raise ValidationError(str(exc)) from None

    def validate_refund_threshold(self, field):
        text = (field.data or "").strip()
        if not text:
            self.threshold_minor = None
            return
        if self.currency.errors or not is_known_currency(self.currency.data or ""):
            raise ValidationError(_s("Enter a valid currency first."))
        try:
            self.threshold_minor = parse_amount(text, self.currency.data)
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_min_part_payment(self, field):
        text = (field.data or "").strip()
        self.min_part_minor = None
        if not text:
            return
        if self.currency.errors or not is_known_currency(self.currency.data or ""):
            raise ValidationError(_s("Enter a valid currency first."))
        try:
            self.min_part_minor = parse_amount(text, self.currency.data)
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def logo_sha256(self, lab: Lab) -> str | None:
        if self.new_logo:
            return self.new_logo.sha256
        return None if self.remove_logo.data else lab.logo_sha256

    def to_settings(self, lab: Lab) -> LabSettings:
        return LabSettings(
            name=self.name.data.strip(), currency=self.currency.data,
            timezone=self.timezone.data, locale=self.locale.data or lab.locale,
            # A form without the field (an older page still open) keeps what the lab has.
            default_language=i18n.normalize(self.default_language.data) or lab.default_language,
            default_expiry_hours=self.default_expiry_hours.data,
            reminder_hours_before=tuple(
                lab_settings.parse_reminder_hours(self.reminder_hours.data)),
            refund_approval_threshold=self.threshold_minor,
            refund_reasons=tuple(lab_settings.parse_refund_reasons(self.refund_reasons.data)),
            brand_color=lab_settings.check_brand_color(self.brand_color.data),
            logo_sha256=self.logo_sha256(lab), min_part_payment=self.min_part_minor,
            address=lab_settings.check_address(self.address.data), phone=self.phone_e164,
            email=lab_settings.check_email(self.email.data))
