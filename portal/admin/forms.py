"""Gateway credential forms, built from each gateway's declared fields."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.validators import Length, Optional

from gateways.base import Gateway

from ..i18n import staff_lazy_gettext as _l
from ..models import GatewayMode


def gateway_form(cls: type[Gateway], stored: dict[str, str] | None, formdata=None):
    """A form class with one field per credential; secrets are never rendered back."""

    class GatewayKeysForm(FlaskForm):
        mode = SelectField(_l("Mode"), choices=[m.value for m in GatewayMode])
        make_default = BooleanField(_l("Use this gateway for new payment links"), default=True)

    for spec in cls.credential_fields:
        kwargs = {"validators": [Optional(), Length(max=4096)], "description": spec.help}
        if spec.choices:
            field = SelectField(spec.label, choices=list(spec.choices), **kwargs)
        elif spec.secret:
            field = PasswordField(spec.label, **kwargs)
        else:
            field = StringField(spec.label, **kwargs)
        setattr(GatewayKeysForm, spec.name, field)

    form = GatewayKeysForm(formdata=formdata)
    if formdata is None and stored:
        for spec in cls.credential_fields:
            if not spec.secret and spec.name in stored:
                getattr(form, spec.name).data = stored[spec.name]
    return form
