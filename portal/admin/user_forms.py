"""Forms of the users and API keys pages, and of setting one's own password."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp

from ..i18n import staff_gettext as _s
from ..i18n import staff_lazy_gettext as _l
from ..models import Role
from ..services.auth import MIN_PASSWORD_LENGTH


def role_choices() -> dict[str, str]:
    """value -> label (WTForms 3.3 deprecates tuples), in the staff language of the request."""
    return {Role.STAFF.value: _s("Staff: create, send, cancel and view links"),
            Role.ADMIN.value: _s("Admin: also refunds, keys, users and lab settings")}


def how_choices() -> dict[str, str]:
    return {"invite": _s("Invite link: they choose their password (valid 72 hours)"),
            "password": _s("One-time password: they must change it at first sign-in")}


class _ChoicesPerRequest(FlaskForm):
    """Select labels are looked up when the form is made, so they follow the request's language."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "role" in self:
            self["role"].choices = role_choices()
        if "how" in self:
            self["how"].choices = how_choices()


class NewUserForm(_ChoicesPerRequest):
    # Not email_validator: it refuses reserved names such as the demo's `@demo.test`.
    email = EmailField(_l("Email"), filters=[lambda v: v.strip() if v else v], validators=[
        DataRequired(message=_l("Enter the person's email.")), Length(max=254),
        Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("Enter a valid email address."))])
    name = StringField(_l("Name (optional)"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), default=Role.STAFF.value)
    how = SelectField(_l("How they get in"), default="invite")


class RoleForm(_ChoicesPerRequest):
    role = SelectField(_l("Role"))


class ResetAccessForm(_ChoicesPerRequest):
    how = SelectField(_l("New way in"), default="invite",
                      description=_l("Their current password and earlier invite links stop "
                                  "working at once."))


class SetPasswordForm(FlaskForm):
    password = PasswordField(_l("New password"), validators=[
        DataRequired(message=_l("Choose a password.")),
        Length(min=MIN_PASSWORD_LENGTH, max=1024,
               message=f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")],
        description=f"At least {MIN_PASSWORD_LENGTH} characters; a few words are easy to "
                    "remember.")
    confirm = PasswordField(_l("New password again"), validators=[
        DataRequired(message=_l("Type the password again.")),
        EqualTo("password", message=_l("The two passwords differ."))])


class ChangePasswordForm(SetPasswordForm):
    current = PasswordField(_l("Current password"), validators=[
        DataRequired(message=_l("Enter your current password.")), Length(max=1024)])


class ApiKeyForm(FlaskForm):
    name = StringField(_l("Name"), validators=[
        DataRequired(message=_l("Name the key, e.g. the system that will use it.")),
        Length(max=100)], description=_l("For example “LIS billing”."))
