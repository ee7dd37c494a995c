"""Forms of the portal (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp, ValidationError

from tenants import passwords


def labelled(choices: dict) -> list[SelectChoice]:
    """A select's choices from {value: label}, the labels lazily translated (WTForms wants
    `SelectChoice`s once a label is not a plain string)."""
    return [SelectChoice(value=value, label=label) for value, label in choices.items()]


COLOR = Regexp(r"^#[0-9a-fA-F]{6}$", message=_l("Use a colour of the form #1a2b3c."))


class ActionForm(FlaskForm):
    """A button that changes something: only the CSRF token."""


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=passwords.MAX_LENGTH)])


class ForgotPasswordForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])


class SetPasswordForm(FlaskForm):
    password = PasswordField(_l("New password"), validators=[DataRequired()])
    confirm = PasswordField(
        _l("Repeat the password"), validators=[DataRequired(), EqualTo("password", _l("The two passwords differ."))]
    )

    def validate_password(self, field):
        problem = passwords.password_problem(field.data or "")
        if problem:
            raise ValidationError(problem)


class TenantForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    slug = StringField(
        _l("Slug"),
        validators=[DataRequired(), Length(max=63)],
        description=_l("Lower-case letters, digits and hyphens; the portal is at <slug>.<platform domain>."),
    )
    domains = TextAreaField(
        _l("Custom domains"),
        validators=[Optional(), Length(max=2000)],
        description=_l("One per line; the first is the primary domain. Leave empty to use the subdomain only."),
    )
    theme = SelectField(_l("Theme"))
    admin_email = EmailField(
        _l("Admin e-mail"),
        validators=[DataRequired(), Length(max=254)],
        description=_l("Receives an invitation link to set a password."),
    )


class BrandForm(FlaskForm):
    display_name = StringField(_l("Display name"), validators=[DataRequired(), Length(max=120)])
    theme = SelectField(_l("Theme"))
    primary_color = StringField(_l("Primary colour"), validators=[DataRequired(), COLOR])
    accent_color = StringField(_l("Accent colour"), validators=[DataRequired(), COLOR])
    support_email = EmailField(_l("Support e-mail"), validators=[Optional(), Length(max=254)])


def _time_zones() -> dict[str, str]:
    zones = sorted(zone for zone in available_timezones() if "/" in zone and not zone.startswith(("Etc/", "SystemV/")))
    return {"UTC": "UTC"} | {zone: zone for zone in zones}


class PreferencesForm(FlaskForm):
    """The tenant's default language and time zone."""

    default_locale = SelectField(
        _l("Default language"),
        choices={"en": "English", "zh": "中文（简体）"},
        description=_l("Pages and e-mails use it for everyone who has not chosen a language of their own."),
    )
    time_zone = SelectField(
        _l("Time zone"),
        choices=_time_zones(),
        description=_l("Dates and times are shown in it, and settlement days are counted in it."),
    )


class LogoForm(FlaskForm):
    logo = FileField(
        _l("Logo"),
        validators=[FileRequired(_l("Choose an image file."))],
        description=_l("PNG, JPEG, GIF or WebP, at most 512 KiB and 2000 pixels a side."),
    )


class InviteUserForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    role = SelectField(_l("Role"))


class MerchantForm(FlaskForm):
    name = StringField(_l("Merchant name"), validators=[DataRequired(), Length(max=200)])
    owner_email = EmailField(
        _l("Owner e-mail"),
        validators=[DataRequired(), Length(max=254)],
        description=_l("Receives an invitation link to set a password."),
    )


EXPIRED = _l("The form expired; try again.")


def add_error(field, message: str) -> None:
    """One more error message next to a form field."""
    field.errors = [*field.errors, message]


def note_expired(form) -> None:
    """A form refused for its CSRF token alone says so (the token has no field on the page)."""
    if "csrf_token" in form.errors:
        form.form_errors.append(str(EXPIRED))


def field_error(form, exc) -> None:
    """Show a use case's `InvalidInput` next to its field (or above the form)."""
    field = getattr(form, exc.field or "", None)
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        form.form_errors.append(exc.message)


class ChannelAccountForm(FlaskForm):
    """A channel account; per-product rows (serve, percent, fixed) are added by `channel_account_form`."""

    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=120)])
    type = SelectField(
        _l("Channel type"), choices=labelled({"sandbox": _l("Sandbox (simulated)"), "stripe": _l("Stripe-compatible")})
    )
    mode = SelectField(
        _l("Mode"),
        choices=labelled({"test": _l("Test"), "live": _l("Live")}),
        description=_l("Test-mode API keys route only to test accounts, live keys only to live ones."),
    )
    status = SelectField(_l("Status"), choices=labelled({"active": _l("Active"), "paused": _l("Paused")}))
    currency = StringField(
        _l("Currency"),
        validators=[DataRequired(), Length(min=3, max=3)],
        description=_l("ISO 4217 code, e.g. USD. Limits and fixed costs are in this currency."),
    )
    base_url = StringField(
        _l("Base URL"),
        validators=[Optional(), Length(max=300)],
        description=_l("For Stripe-compatible servers; empty means https://api.stripe.com."),
    )
    secret_key = PasswordField(
        _l("Secret key"),
        validators=[Optional(), Length(max=300)],
        description=_l("Stored encrypted. Leave empty to keep the stored one."),
    )
    webhook_secret = PasswordField(
        _l("Webhook signing secret"),
        validators=[Optional(), Length(max=300)],
        description=_l("Stored encrypted. Leave empty to keep the stored one."),
    )
    publishable_key = StringField(
        _l("Publishable key"),
        validators=[Optional(), Length(max=220)],
        description=_l(
            "Stripe only: pk_test_… or pk_live_…; the hosted checkout gives it to Stripe.js in the payer's "
            "browser, which tokenises the card."
        ),
    )
    min_amount = StringField(_l("Minimum per payment"), validators=[Optional(), Length(max=30)])
    max_amount = StringField(
        _l("Maximum per payment"), validators=[Optional(), Length(max=30)], description=_l("Empty: no maximum.")
    )
    daily_cap = StringField(_l("Daily cap"), validators=[Optional(), Length(max=30)], description=_l("Empty: no cap."))
    priority = StringField(
        _l("Priority"),
        validators=[DataRequired(), Regexp(r"^-?\d{1,6}$", message=_l("A whole number."))],
        description=_l("Among equally cheap accounts, the lower number wins."),
    )
    required_elements = StringField(
        _l("Required payer elements"),
        validators=[Optional(), Length(max=300)],
        description=_l("Comma-separated, e.g. payer_email, payer_phone."),
    )
    latency_ms = StringField(
        _l("Simulated latency (ms)"),
        validators=[Optional(), Regexp(r"^\d{1,5}$", message=_l("A whole number of milliseconds."))],
        description=_l("Sandbox only: every call waits this long, as a slow channel would."),
    )
    test_instruments = SelectField(
        _l("Test instruments"),
        choices=labelled(
            {"": _l("As the channel documents them"), "localstripe": _l("localstripe's (a Stripe stand-in)")}
        ),
        validators=[Optional()],
        description=_l("Which test cards the channel knows, for Stripe's test payment methods in test mode."),
    )


def channel_account_form(products, **kwargs) -> ChannelAccountForm:
    """The form with a serve/percent/fixed row for each product of the catalogue."""
    from wtforms import BooleanField

    class Form(ChannelAccountForm):
        pass

    for code, label in products:
        setattr(Form, f"serve_{code}", BooleanField(label))
        setattr(
            Form,
            f"percent_{code}",
            StringField(_l("%(label)s: cost %%", label=label), validators=[Optional(), Length(max=12)]),
        )
        setattr(
            Form,
            f"fixed_{code}",
            StringField(_l("%(label)s: fixed cost", label=label), validators=[Optional(), Length(max=20)]),
        )
    return Form(**kwargs)


class RoutingRuleForm(FlaskForm):
    merchant_id = SelectField(_l("Merchant"))
    channel_account_id = SelectField(_l("Channel account"))
    action = SelectField(
        _l("Rule"), choices=labelled({"force": _l("Always use this account"), "exclude": _l("Never use this account")})
    )
    product = SelectField(_l("Product"))


class RouteTestForm(FlaskForm):
    merchant_id = SelectField(_l("Merchant"))
    product = SelectField(_l("Product"))
    amount = StringField(_l("Amount"), validators=[DataRequired(), Length(max=30)])
    currency = StringField(_l("Currency"), validators=[DataRequired(), Length(min=3, max=3)])
    mode = SelectField(_l("Mode"), choices=labelled({"test": _l("Test"), "live": _l("Live")}))
    payer_elements = StringField(
        _l("Payer elements present"),
        validators=[Optional(), Length(max=300)],
        description=_l("Comma-separated, e.g. payment_method, payer_email."),
    )


class ApiKeyForm(FlaskForm):
    """A new secret API key of the signed-in merchant."""

    name = StringField(
        _l("Name"),
        validators=[DataRequired(), Length(max=100)],
        description=_l("Where the key is used, e.g. “Web shop” or “Order backend”."),
    )
    mode = SelectField(
        _l("Mode"),
        choices=labelled({"test": _l("Test (sk_test_…)"), "live": _l("Live (sk_live_…)")}),
        description=_l("Test keys never move real money; live keys do."),
    )


class RollApiKeyForm(FlaskForm):
    """Roll a key: a new secret now, the old one working until the chosen time."""

    expires_in = SelectField(
        _l("The old key stops working"),
        choices=labelled({0: _l("Now"), 1: _l("In 1 hour"), 24: _l("In 24 hours"), 168: _l("In 7 days")}),
        coerce=int,
        default=0,
    )


class RefundForm(FlaskForm):
    amount = StringField(
        _l("Amount to refund"),
        validators=[Optional(), Length(max=30)],
        description=_l("Empty: everything not yet refunded."),
    )
    reason = SelectField(
        _l("Reason"),
        choices=labelled(
            {
                "": "—",
                "requested_by_customer": _l("Requested by the customer"),
                "duplicate": _l("Duplicate"),
                "fraudulent": _l("Fraudulent"),
            }
        ),
        validators=[Optional()],
    )


class TerminalForm(FlaskForm):
    """A terminal (POS or face-pay device) the signed-in merchant registers."""

    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Give the terminal a name.")), Length(max=100)],
        description=_l("How your staff call it, e.g. “Till 1” or “Entrance face-pay”."),
    )
    kind = SelectField(
        _l("Kind"),
        choices=[SelectChoice("pos", _l("POS")), SelectChoice("face_pay", _l("Face-pay device"))],
    )
    serial_number = StringField(
        _l("Serial number"),
        validators=[DataRequired(_l("Give the serial number.")), Length(max=64)],
        description=_l("As printed on the device's label."),
    )
    location = StringField(
        _l("Location"),
        validators=[Optional(), Length(max=200)],
        description=_l("Where it stands, e.g. “Shop floor, Main Street 1” (optional)."),
    )
    mode = SelectField(
        _l("Mode"),
        choices=[
            SelectChoice("test", _l("Test (dk_test_…)")),
            SelectChoice("live", _l("Live (dk_live_…)")),
        ],
        description=_l("A test terminal never moves real money; a live one does."),
    )
