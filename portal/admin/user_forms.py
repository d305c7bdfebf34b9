"""Forms of the users and API keys pages, and of setting one's own password."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp

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
    email = EmailField("Email", filters=[lambda v: v.strip() if v else v], validators=[
        DataRequired(message="Enter the person's email."), Length(max=254),
        Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter a valid email address.")])
    name = StringField("Name (optional)", validators=[Optional(), Length(max=200)])
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.STAFF.value)
    how = SelectField("How they get in", choices=HOW_CHOICES, default="invite")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class ResetAccessForm(FlaskForm):
    how = SelectField("New way in", choices=HOW_CHOICES, default="invite",
                      description="Their current password and earlier invite links stop "
                                  "working at once.")


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[
        DataRequired(message="Choose a password."),
        Length(min=MIN_PASSWORD_LENGTH, max=1024,
               message=f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")],
        description=f"At least {MIN_PASSWORD_LENGTH} characters; a few words are easy to "
                    "remember.")
    confirm = PasswordField("New password again", validators=[
        DataRequired(message="Type the password again."),
        EqualTo("password", message="The two passwords differ.")])


class ChangePasswordForm(SetPasswordForm):
    current = PasswordField("Current password", validators=[
        DataRequired(message="Enter your current password."), Length(max=1024)])


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[
        DataRequired(message="Name the key, e.g. the system that will use it."),
        Length(max=100)], description="For example “LIS billing”.")
