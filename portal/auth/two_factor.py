"""Two-factor sign-in pages: the code step after the password, the enrolment a person who must use
2FA completes right after their password, and the signed-in person's own 2FA page (enrol,
disable, new recovery codes).

Between the password and the code the person is not signed in: the session holds only a pending
marker (`PENDING_KEY`: the account, which step, where to go next, an expiry) that opens these two
pages and nothing else. A signed-in person who must use 2FA but has not enrolled (their tenant
started requiring it) can open only their 2FA page until they enrol (`require_enrolment`).
"""

from __future__ import annotations

import time

import segno
from flask import current_app, flash, g, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from portal.auth import OUTCOME_MESSAGES, _lockout, bp, home_for, load_user
from portal.forms import field_error
from portal.sites import current_actor
from portal.theming import render
from tenants import accounts, two_factor
from tenants.errors import InvalidInput

PENDING_KEY = "pending_2fa"
PENDING_SECONDS = 300  # how long the code step waits after the password (config TWO_FACTOR_PENDING_SECONDS)
# Pages a signed-in person who must still enrol may open (besides this blueprint's own).
OPEN_ENDPOINTS = frozenset({"theme_static", "brand_logo", "static", "i18n.switch_language"})
# Blueprints that do not serve signed-in people's pages (API keys, channels, payers).
UNGUARDED_BLUEPRINTS = frozenset({"auth", "api", "notifications", "checkout", "paylinks"})

BAD_CODE = _l("That code is not right. Type the 6-digit code your authenticator app shows now.")
REPLAYED_CODE = _l("That code was used already. Wait for the next one and type it.")


class CodeForm(FlaskForm):
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=40)])


class RenewCodesForm(FlaskForm):
    current_code = StringField(_l("Code"), validators=[DataRequired(), Length(max=40)])


class DisableForm(FlaskForm):
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=256)])
    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=40)])


# --- the pending marker ----------------------------------------------------------------------


def start_pending(account, step: str, next_url: str | None) -> str:
    """After a right password: remember who is half-signed-in, and where the next step is."""
    session[PENDING_KEY] = {
        "account": account.get_id(),
        "step": step,
        "next": next_url,
        "expires": int(time.time()) + current_app.config.get("TWO_FACTOR_PENDING_SECONDS", PENDING_SECONDS),
    }
    return url_for("auth.two_factor_code" if step == "code" else "auth.two_factor_enrol")


def clear_pending() -> None:
    session.pop(PENDING_KEY, None)


def _pending(step: str):
    """The half-signed-in account of this session at `step`, or None (no marker, expired, other step)."""
    marker = session.get(PENDING_KEY)
    if not isinstance(marker, dict) or marker.get("step") != step:
        return None
    if int(marker.get("expires", 0)) < time.time():
        clear_pending()
        return None
    account = load_user(str(marker.get("account", "")))
    if account is None:
        clear_pending()
    return account


def _sign_in_again():
    flash(_("Your sign-in has expired. Sign in again."), "error")
    return redirect(url_for("auth.login"))


def _finish(account):
    """Signed in: the pending marker gives way to the real session."""
    next_url = (session.get(PENDING_KEY) or {}).get("next")
    clear_pending()
    login_user(account)
    return next_url or home_for(account)


def _refusal(outcome: str) -> str:
    if outcome == two_factor.REPLAYED_CODE:
        return str(REPLAYED_CODE)
    if outcome in OUTCOME_MESSAGES:
        return str(OUTCOME_MESSAGES[outcome]) % {"minutes": current_app.config["LOGIN_LOCKOUT_MINUTES"]}
    return str(BAD_CODE)


# --- presentation ----------------------------------------------------------------------------


def _issuer() -> str:
    return g.brand.display_name


def _setup(account) -> dict:
    """What an enrolment page shows: the QR code (inline SVG) and the secret as text."""
    secret = two_factor.begin_enrolment(account)
    uri = two_factor.provisioning_uri(account, secret, _issuer())
    svg = segno.make(uri, error="m").svg_inline(scale=4, title=_("QR code for your authenticator app"))
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return {"qr_svg": Markup(svg), "secret": grouped, "otpauth_uri": uri}


# --- the second step ---------------------------------------------------------------------------


@bp.route("/login/code", methods=["GET", "POST"])
def two_factor_code():
    account = _pending("code")
    if account is None:
        return _sign_in_again()
    form = CodeForm()
    error = None
    if form.validate_on_submit():
        result = accounts.second_step(account, form.code.data, request.remote_addr, _lockout())
        if result.ok:
            if result.outcome == two_factor.RECOVERY_OK:
                left = len(account.recovery_code_hashes or [])
                flash(
                    _(
                        "You signed in with a recovery code; %(left)s are left. Make new ones on your account page.",
                        left=left,
                    ),
                    "info",
                )
            return redirect(_finish(account))
        error = _refusal(result.outcome)
        if result.outcome in ("locked", "inactive"):
            clear_pending()
            flash(error, "error")
            return redirect(url_for("auth.login"))
    status = 200 if error is None else 401
    return render("auth/two_factor_code.html", form=form, error=error), status


@bp.route("/login/enrol", methods=["GET", "POST"])
def two_factor_enrol():
    """Right after the password, for a person who must use 2FA and has not enrolled yet."""
    account = _pending("enrol")
    if account is None:
        return _sign_in_again()
    form = CodeForm()
    if form.validate_on_submit():
        try:
            result, codes = accounts.enrol_and_sign_in(account, form.code.data, request.remote_addr, _lockout())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            if not result.ok:
                clear_pending()
                flash(_refusal(result.outcome), "error")
                return redirect(url_for("auth.login"))
            next_url = _finish(account)
            return render("auth/recovery_codes.html", codes=codes, continue_url=next_url, enrolled=True)
    status = 422 if form.errors else 200
    return render("auth/two_factor_enrol.html", form=form, **_setup(account)), status


# --- the signed-in person's own page -----------------------------------------------------------


def _me():
    """The signed-in account itself (use cases lock and refresh it; a proxy cannot be)."""
    return current_user._get_current_object()


def _required() -> bool:
    return two_factor.is_required(current_user, getattr(g, "tenant", None))


def _account_page(enable_form=None, disable_form=None, codes_form=None, status: int = 200):
    enabled = current_user.has_two_factor
    setup = {} if enabled else _setup(_me())
    return render(
        "auth/two_factor.html",
        enabled=enabled,
        required=_required(),
        codes_left=len(current_user.recovery_code_hashes or []),
        enable_form=enable_form or CodeForm(),
        disable_form=disable_form or DisableForm(),
        codes_form=codes_form or RenewCodesForm(),
        **setup,
    ), status


@bp.route("/account/two-factor")
@login_required
def two_factor_page():
    return _account_page()


@bp.route("/account/two-factor/enable", methods=["POST"])
@login_required
def two_factor_enable():
    form = CodeForm()
    if form.validate_on_submit():
        try:
            codes = two_factor.confirm_enrolment(_me(), form.code.data, current_actor())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            return render(
                "auth/recovery_codes.html", codes=codes, continue_url=url_for("auth.two_factor_page"), enrolled=True
            )
    return _account_page(enable_form=form, status=422)


@bp.route("/account/two-factor/disable", methods=["POST"])
@login_required
def two_factor_disable():
    form = DisableForm()
    if form.validate_on_submit():
        try:
            two_factor.disable(_me(), form.password.data, form.code.data, current_actor(), _required())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("Two-factor sign-in is off."), "success")
            return redirect(url_for("auth.two_factor_page"))
    return _account_page(disable_form=form, status=422)


@bp.route("/account/two-factor/recovery-codes", methods=["POST"])
@login_required
def two_factor_recovery_codes():
    form = RenewCodesForm()
    if form.validate_on_submit():
        try:
            codes = two_factor.regenerate_recovery_codes(_me(), form.current_code.data, current_actor())
        except InvalidInput as exc:
            field_error(form, InvalidInput(exc.message, "current_code" if exc.field else None))
        else:
            return render(
                "auth/recovery_codes.html", codes=codes, continue_url=url_for("auth.two_factor_page"), enrolled=False
            )
    return _account_page(codes_form=form, status=422)


# --- a signed-in person who must enrol can open nothing else -----------------------------------


@bp.before_app_request
def require_enrolment():
    if request.blueprint in UNGUARDED_BLUEPRINTS or request.endpoint in OPEN_ENDPOINTS:
        return None
    if "_user_id" not in session or getattr(g, "site", None) is None:
        return None
    if not current_user.is_authenticated or current_user.has_two_factor:
        return None
    if _required():
        flash(_("Your account must use two-factor sign-in. Set it up to continue."), "info")
        return redirect(url_for("auth.two_factor_page"))
    return None
