"""The form staff fill in when a patient pays at the desk."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from ..i18n import staff_lazy_gettext as _l
from ..money import MoneyError, major_string, parse_amount
from ..services.counter import COUNTER_KEY, COUNTER_METHODS, new_counter_key


class CounterPaymentForm(FlaskForm):
    counter_amount = StringField(_l("Amount received"),
                                 validators=[DataRequired(message=_l("Enter an amount."))])
    counter_method = SelectField(_l("Paid by"), choices=dict(COUNTER_METHODS))
    counter_note = StringField(_l("Note (optional)"), validators=[Optional(), Length(max=200)],
                               description=_l("For example the card slip or UPI reference."))
    # Made when the form renders: a double-click records one payment.
    counter_key = HiddenField(validators=[
        Regexp(f"^{COUNTER_KEY.pattern}$", message=_l("This form is not valid. Reload the page."))])

    def __init__(self, *args, link, **kwargs):
        super().__init__(*args, **kwargs)
        self.link = link
        self.amount_minor: int | None = None
        self.counter_amount.description = f"In {link.currency}."

    @classmethod
    def blank(cls, link) -> CounterPaymentForm:
        form = cls(formdata=None, link=link)
        form.counter_amount.data = major_string(link.outstanding, link.currency)
        form.counter_key.data = new_counter_key()
        return form

    def validate(self, extra_validators=None):
        ok = super().validate(extra_validators)
        if self.counter_key.errors:
            self.form_errors.extend(self.counter_key.errors)
            self.counter_key.data = new_counter_key()
        return ok

    def validate_counter_amount(self, field):
        try:
            self.amount_minor = parse_amount(field.data, self.link.currency)
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None
