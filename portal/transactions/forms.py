"""The transactions filter: a GET form (no CSRF: it changes nothing), checked like any other."""

from __future__ import annotations

from datetime import date

from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import DateField, SearchField, SelectField, StringField
from wtforms.validators import Length, Optional, ValidationError
from wtforms.widgets import Select

from gateways import GATEWAYS

from ..filters import status_label
from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..models import PaymentStatus
from ..money import COMMON_CURRENCIES, MoneyError, parse_amount
from ..services.counter import COUNTER
from ..services.transactions import TransactionFilter

# Local days become UTC bounds (and the day after date_to): the calendar's ends overflow.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def within_calendar(_form, field):
    if field.data and not FIRST_DAY <= field.data <= LAST_DAY:
        raise ValidationError(_s("Enter a date between 1970 and 9998."))


class PlainSelect(Select):
    """WTForms' select with plain options written directly: the same HTML, without sorting
    and escaping a dict of attributes per option (the filter's ~50 options cost a millisecond
    a page)."""

    @classmethod
    def render_option(cls, choice, **kwargs):
        if kwargs or choice.render_kw or not isinstance(choice.value, str):
            return super().render_option(choice, **kwargs)
        if choice.selected:
            return Markup('<option selected value="{}">{}</option>').format(
                choice.value, choice.label or choice.value)
        return Markup('<option value="{}">{}</option>').format(
            choice.value, choice.label or choice.value)

    @classmethod
    def _dispatch_render_option(cls):
        return cls.render_option


FIELDS = ("q", "status", "gateway", "currency", "date_from", "date_to", "amount_min",
          "amount_max")


class TransactionFilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = SearchField(_l("Search"), validators=[Optional(), Length(max=100)],
                    description=_l("Start of the patient's name, email or bill reference; a mobile "
                                "number; a gateway transaction id or our payment reference."))
    status = SelectField(_l("Status"), default="", validators=[Optional()],
                         widget=PlainSelect())
    gateway = SelectField(_l("Gateway"), default="", validators=[Optional()],
                          widget=PlainSelect())
    currency = SelectField(_l("Currency"), default="", validators=[Optional()],
                           widget=PlainSelect())
    date_from = DateField(_l("Date from"), validators=[Optional(), within_calendar])
    date_to = DateField(_l("Date to"), validators=[Optional(), within_calendar])
    amount_min = StringField(_l("Amount from"), validators=[Optional(), Length(max=30)])
    amount_max = StringField(_l("Amount to"), validators=[Optional(), Length(max=30)])

    def __init__(self, formdata, *, lab):
        super().__init__(formdata=formdata)
        self.lab = lab
        codes = list(COMMON_CURRENCIES)
        if lab.currency not in codes:
            codes.insert(0, lab.currency)
        self.currency.choices = {"": _s("Any currency"), **{c: c for c in codes}}
        self.status.choices = {"": _s("Any status"),
                               **{s.value: status_label(s.value) for s in PaymentStatus}}
        self.gateway.choices = {
            "": _s("Any gateway"), **{name: cls.display_name for name, cls in GATEWAYS.items()},
            COUNTER: _s("At the counter")}
        self.minor: dict[str, int | None] = {"amount_min": None, "amount_max": None}

    def validate_date_to(self, field):
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError(_s("The end date is before the start date."))

    def validate(self, extra_validators=None):
        ok = super().validate(extra_validators)
        amounts = [f for f in (self.amount_min, self.amount_max) if (f.data or "").strip()]
        if amounts and not self.currency.data and not self.currency.errors:
            self.currency.data = self.lab.currency  # an amount means money of one currency
        for field in amounts:
            if field.errors:
                continue
            try:
                self.minor[field.name] = parse_amount(field.data, self.currency.data)
            except MoneyError as exc:
                field.errors.append(str(exc))
                ok = False
        low, high = self.minor["amount_min"], self.minor["amount_max"]
        if low is not None and high is not None and high < low:
            self.amount_max.errors.append(_s("The upper amount is below the lower one."))
            ok = False
        return ok

    def to_filter(self) -> TransactionFilter:
        return TransactionFilter(
            status=PaymentStatus(self.status.data) if self.status.data else None,
            gateway=self.gateway.data or None, currency=self.currency.data or None,
            date_from=self.date_from.data, date_to=self.date_to.data,
            amount_min=self.minor["amount_min"], amount_max=self.minor["amount_max"],
            query=(self.q.data or "").strip())

    def query_args(self) -> dict[str, str]:
        """The filter as URL arguments (for the pager and the CSV link), empty ones left out."""
        args = {}
        for name in FIELDS:
            value = getattr(self, name).data
            if value not in (None, ""):
                args[name] = value.isoformat() if hasattr(value, "isoformat") else str(value)
        return args
