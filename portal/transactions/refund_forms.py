"""The refund form of a payment's page: amount in major units, a reason from the lab's list."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Regexp, ValidationError

from ..i18n import staff_lazy_gettext as _l
from ..money import MoneyError, format_money, major_string, parse_amount
from ..services.refunds import REFUND_KEY, new_refund_key, refund_reasons


class RefundForm(FlaskForm):
    refund_amount = StringField(_l("Amount to refund"),
                                validators=[DataRequired(message=_l("Enter an amount."))])
    refund_reason = SelectField(_l("Reason"), validate_choice=True)
    # Made when the form renders: the same form sent twice makes one refund.
    refund_key = HiddenField(validators=[
        Regexp(f"^{REFUND_KEY.pattern}$", message=_l("This form is not valid. Reload the page."))])

    def __init__(self, *args, payment, lab, remaining: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.payment = payment
        self.amount_minor: int | None = None
        self.refund_reason.choices = refund_reasons(lab)
        most = format_money(remaining, payment.currency, lab.locale)
        self.refund_amount.description = f"In {payment.currency}, at most {most}."

    @classmethod
    def blank(cls, payment, lab, remaining: int) -> RefundForm:
        """A new form: the whole remaining amount, and a fresh token for this one refund."""
        form = cls(formdata=None, payment=payment, lab=lab, remaining=remaining)
        form.refund_amount.data = major_string(remaining, payment.currency)
        form.refund_key.data = new_refund_key()
        return form

    def validate(self, extra_validators=None):
        ok = super().validate(extra_validators)
        if self.refund_key.errors:  # hidden: said above the form, with a new token to go on
            self.form_errors.extend(self.refund_key.errors)
            self.refund_key.data = new_refund_key()
        return ok

    def validate_refund_amount(self, field):
        try:
            self.amount_minor = parse_amount(field.data, self.payment.currency)
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None
