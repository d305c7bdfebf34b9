"""Forms of the users and API keys pages, and of setting one's own password."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp

from ..i18n import staff_lazy_gettext as _l
from ..models import Role
from ..services.auth import MIN_PASSWORD_LENGTH

# value -> label dicts: WTForms 3.3 deprecates (value, label) tuples.
ROLE_CHOICES = {Role.STAFF.value: "Staff: create, send, cancel and view links",
                Role.ADMIN.value: "Admin: also refunds, keys, users and lab settings"}
HOW_CHOICES = {"invite": "Invite link: they choose their password (valid 72 hours)"}
# B105 (below): a label for the choice "password", not a password.
HOW_CHOICES["password"] = "One-time password: they must change it at first sign-in"  # nosec B105


class NewUserForm(FlaskForm):
    # Not email_validator: it refuses reserved names such as the demo's `@demo.test`.
    email = EmailField(_l("Email"), filters=[lambda v: v.strip() if v else v], validators=[
        DataRequired(message=_l("Enter the person's email.")), Length(max=254),
        Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("Enter a valid email address."))])
    name = StringField(_l("Name (optional)"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, default=Role.STAFF.value)
    how = SelectField(_l("How they get in"), choices=HOW_CHOICES, default="invite")


class RoleForm(FlaskForm):
    role = SelectField(_l("Role"), choices=ROLE_CHOICES)


class ResetAccessForm(FlaskForm):
    how = SelectField(_l("New way in"), choices=HOW_CHOICES, default="invite",
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
