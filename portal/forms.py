"""Forms of the portal (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
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


EXPIRED = "The form expired; try again."


def add_error(field, message: str) -> None:
    """One more error message next to a form field."""
    field.errors = [*field.errors, message]


def note_expired(form) -> None:
    """A form refused for its CSRF token alone says so (the token has no field on the page)."""
    if "csrf_token" in form.errors:
        form.form_errors.append(EXPIRED)


def field_error(form, exc) -> None:
    """Show a use case's `InvalidInput` next to its field (or above the form)."""
    field = getattr(form, exc.field or "", None)
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        form.form_errors.append(exc.message)


class ChannelAccountForm(FlaskForm):
    """A channel account; per-product rows (serve, percent, fixed) are added by `channel_account_form`."""

    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    type = SelectField("Channel type", choices={"sandbox": "Sandbox (simulated)", "stripe": "Stripe-compatible"})
    mode = SelectField(
        "Mode",
        choices={"test": "Test", "live": "Live"},
        description="Test-mode API keys route only to test accounts, live keys only to live ones.",
    )
    status = SelectField("Status", choices={"active": "Active", "paused": "Paused"})
    currency = StringField(
        "Currency",
        validators=[DataRequired(), Length(min=3, max=3)],
        description="ISO 4217 code, e.g. USD. Limits and fixed costs are in this currency.",
    )
    base_url = StringField(
        "Base URL",
        validators=[Optional(), Length(max=300)],
        description="For Stripe-compatible servers; empty means https://api.stripe.com.",
    )
    secret_key = PasswordField(
        "Secret key",
        validators=[Optional(), Length(max=300)],
        description="Stored encrypted. Leave empty to keep the stored one.",
    )
    webhook_secret = PasswordField(
        "Webhook signing secret",
        validators=[Optional(), Length(max=300)],
        description="Stored encrypted. Leave empty to keep the stored one.",
    )
    publishable_key = StringField(
        "Publishable key",
        validators=[Optional(), Length(max=220)],
        description="Stripe only: pk_test_… or pk_live_…; the hosted checkout gives it to Stripe.js in the payer's "
        "browser, which tokenises the card.",
    )
    min_amount = StringField("Minimum per payment", validators=[Optional(), Length(max=30)])
    max_amount = StringField(
        "Maximum per payment", validators=[Optional(), Length(max=30)], description="Empty: no maximum."
    )
    daily_cap = StringField("Daily cap", validators=[Optional(), Length(max=30)], description="Empty: no cap.")
    priority = StringField(
        "Priority",
        validators=[DataRequired(), Regexp(r"^-?\d{1,6}$", message="A whole number.")],
        description="Among equally cheap accounts, the lower number wins.",
    )
    required_elements = StringField(
        "Required payer elements",
        validators=[Optional(), Length(max=300)],
        description="Comma-separated, e.g. payer_email, payer_phone.",
    )
    latency_ms = StringField(
        "Simulated latency (ms)",
        validators=[Optional(), Regexp(r"^\d{1,5}$", message="A whole number of milliseconds.")],
        description="Sandbox only: every call waits this long, as a slow channel would.",
    )
    test_instruments = SelectField(
        "Test instruments",
        choices={"": "As the channel documents them", "localstripe": "localstripe's (a Stripe stand-in)"},
        validators=[Optional()],
        description="Which test cards the channel knows, for Stripe's test payment methods in test mode.",
    )


def channel_account_form(products, **kwargs) -> ChannelAccountForm:
    """The form with a serve/percent/fixed row for each product of the catalogue."""
    from wtforms import BooleanField

    class Form(ChannelAccountForm):
        pass

    for code, label in products:
        setattr(Form, f"serve_{code}", BooleanField(label))
        setattr(Form, f"percent_{code}", StringField(f"{label}: cost %", validators=[Optional(), Length(max=12)]))
        setattr(Form, f"fixed_{code}", StringField(f"{label}: fixed cost", validators=[Optional(), Length(max=20)]))
    return Form(**kwargs)


class RoutingRuleForm(FlaskForm):
    merchant_id = SelectField("Merchant")
    channel_account_id = SelectField("Channel account")
    action = SelectField("Rule", choices={"force": "Always use this account", "exclude": "Never use this account"})
    product = SelectField("Product")


class RouteTestForm(FlaskForm):
    merchant_id = SelectField("Merchant")
    product = SelectField("Product")
    amount = StringField("Amount", validators=[DataRequired(), Length(max=30)])
    currency = StringField("Currency", validators=[DataRequired(), Length(min=3, max=3)])
    mode = SelectField("Mode", choices={"test": "Test", "live": "Live"})
    payer_elements = StringField(
        "Payer elements present",
        validators=[Optional(), Length(max=300)],
        description="Comma-separated, e.g. payment_method, payer_email.",
    )


class ApiKeyForm(FlaskForm):
    """A new secret API key of the signed-in merchant."""

    name = StringField(
        "Name",
        validators=[DataRequired(), Length(max=100)],
        description="Where the key is used, e.g. “Web shop” or “Order backend”.",
    )
    mode = SelectField(
        "Mode",
        choices={"test": "Test (sk_test_…)", "live": "Live (sk_live_…)"},
        description="Test keys never move real money; live keys do.",
    )


class RollApiKeyForm(FlaskForm):
    """Roll a key: a new secret now, the old one working until the chosen time."""

    expires_in = SelectField(
        "The old key stops working",
        choices={0: "Now", 1: "In 1 hour", 24: "In 24 hours", 168: "In 7 days"},
        coerce=int,
        default=0,
    )


class RefundForm(FlaskForm):
    amount = StringField(
        "Amount to refund", validators=[Optional(), Length(max=30)], description="Empty: everything not yet refunded."
    )
    reason = SelectField(
        "Reason",
        choices={
            "": "—",
            "requested_by_customer": "Requested by the customer",
            "duplicate": "Duplicate",
            "fraudulent": "Fraudulent",
        },
        validators=[Optional()],
    )


class TerminalForm(FlaskForm):
    """A terminal (POS or face-pay device) the signed-in merchant registers."""

    name = StringField(
        lazy_gettext("Name"),
        validators=[DataRequired(lazy_gettext("Give the terminal a name.")), Length(max=100)],
        description=lazy_gettext("How your staff call it, e.g. “Till 1” or “Entrance face-pay”."),
    )
    kind = SelectField(
        lazy_gettext("Kind"),
        choices=[SelectChoice("pos", lazy_gettext("POS")), SelectChoice("face_pay", lazy_gettext("Face-pay device"))],
    )
    serial_number = StringField(
        lazy_gettext("Serial number"),
        validators=[DataRequired(lazy_gettext("Give the serial number.")), Length(max=64)],
        description=lazy_gettext("As printed on the device's label."),
    )
    location = StringField(
        lazy_gettext("Location"),
        validators=[Optional(), Length(max=200)],
        description=lazy_gettext("Where it stands, e.g. “Shop floor, Main Street 1” (optional)."),
    )
    mode = SelectField(
        lazy_gettext("Mode"),
        choices=[
            SelectChoice("test", lazy_gettext("Test (dk_test_…)")),
            SelectChoice("live", lazy_gettext("Live (dk_live_…)")),
        ],
        description=lazy_gettext("A test terminal never moves real money; a live one does."),
    )
