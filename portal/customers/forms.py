"""Charging a patient's saved method for one of their open links."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectField
from wtforms.validators import ValidationError

from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l


class ChargeSavedMethodForm(FlaskForm):
    profile_id = SelectField(_l("Saved method"), choices=[],
                             validate_choice=False)  # checked below, with our own words
    link_id = SelectField(_l("Bill to charge"), choices=[], validate_choice=False,
                          description=_l("The card is charged what the bill still owes, "
                                      "without the patient present."))

    def __init__(self, *args, profiles: list[tuple[str, str]], links: list[tuple[str, str]],
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.profile_id.choices = profiles
        self.link_id.choices = links

    def validate_profile_id(self, field):
        if field.data not in {value for value, _ in field.choices}:
            raise ValidationError(_s("Choose one of the patient's saved methods."))

    def validate_link_id(self, field):
        if field.data not in {value for value, _ in field.choices}:
            raise ValidationError(_s("Choose one of the patient's open bills."))
