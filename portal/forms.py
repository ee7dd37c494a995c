"""Forms of the portal (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp, ValidationError

from tenants import passwords

COLOR = Regexp(r"^#[0-9a-fA-F]{6}$", message="Use a colour of the form #1a2b3c.")


class ActionForm(FlaskForm):
    """A button that changes something: only the CSRF token."""


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=passwords.MAX_LENGTH)])


class ForgotPasswordForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired()])
    confirm = PasswordField(
        "Repeat the password", validators=[DataRequired(), EqualTo("password", "The two passwords differ.")]
    )

    def validate_password(self, field):
        problem = passwords.password_problem(field.data or "")
        if problem:
            raise ValidationError(problem)


class TenantForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    slug = StringField(
        "Slug",
        validators=[DataRequired(), Length(max=63)],
        description="Lower-case letters, digits and hyphens; the portal is at <slug>.<platform domain>.",
    )
    domains = TextAreaField(
        "Custom domains",
        validators=[Optional(), Length(max=2000)],
        description="One per line; the first is the primary domain. Leave empty to use the subdomain only.",
    )
    theme = SelectField("Theme")
    admin_email = EmailField(
        "Admin e-mail",
        validators=[DataRequired(), Length(max=254)],
        description="Receives an invitation link to set a password.",
    )


class BrandForm(FlaskForm):
    display_name = StringField("Display name", validators=[DataRequired(), Length(max=120)])
    theme = SelectField("Theme")
    primary_color = StringField("Primary colour", validators=[DataRequired(), COLOR])
    accent_color = StringField("Accent colour", validators=[DataRequired(), COLOR])
    support_email = EmailField("Support e-mail", validators=[Optional(), Length(max=254)])


class LogoForm(FlaskForm):
    logo = FileField(
        "Logo",
        validators=[FileRequired("Choose an image file.")],
        description="PNG, JPEG, GIF or WebP, at most 512 KiB and 2000 pixels a side.",
    )


class InviteUserForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    role = SelectField("Role")


class MerchantForm(FlaskForm):
    name = StringField("Merchant name", validators=[DataRequired(), Length(max=200)])
    owner_email = EmailField(
        "Owner e-mail",
        validators=[DataRequired(), Length(max=254)],
        description="Receives an invitation link to set a password.",
    )


def field_error(form, exc) -> None:
    """Show a use case's `InvalidInput` next to its field (or above the form)."""
    field = getattr(form, exc.field or "", None)
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        form.form_errors.append(exc.message)
