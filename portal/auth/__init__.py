"""Signing in and out, invitations and password resets, on the platform host and tenant hosts.

On a tenant's host only that tenant's users can sign in; on the platform host only platform
admins. An account with two-factor sign-in (or one that must have it) is not signed in by its
password alone: `portal.auth.two_factor` asks for the code (or the enrolment) first.
The same e-mail under two tenants is two accounts with two passwords.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_user, logout_user

from core.db import db
from portal import invitations
from portal.extensions import login_manager
from portal.forms import ActionForm, ForgotPasswordForm, LoginForm, SetPasswordForm
from portal.theming import render
from tenants import accounts, tokens
from tenants.models import PlatformUser, User

bp = Blueprint("auth", __name__)

OUTCOME_MESSAGES = {
    "locked": _l("Too many failed sign-ins. This account is locked for %(minutes)s minutes."),
    "inactive": _l("This account is disabled. Contact your administrator."),
    "suspended": _l("This portal is suspended."),
}
GENERIC_FAILURE = _l("The e-mail or password is not correct.")


@login_manager.user_loader
def load_user(user_id: str):
    """Only accounts of the request's own site load: a cookie cannot cross hosts or tenants."""
    site = getattr(g, "site", None)
    kind, _sep, raw = user_id.partition(":")
    try:
        account_id = uuid.UUID(raw)
    except ValueError:
        return None
    if site is not None and site.is_platform and kind == "p":
        user = db.session.execute(sa.select(PlatformUser).where(PlatformUser.id == account_id)).scalar_one_or_none()
    elif site is not None and site.is_tenant and kind == "u":
        user = db.session.execute(
            sa.select(User).where(User.tenant_id == site.tenant_id, User.id == account_id)
        ).scalar_one_or_none()
        if user is not None and user.tenant_id != site.tenant_id:
            return None
    else:
        return None
    return user if user is not None and user.is_active else None


def home_for(user) -> str:
    if user.scope == "platform":
        return url_for("platform.tenants")
    if user.is_merchant_user:
        return url_for("merchant.dashboard")
    return url_for("console.dashboard")


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _lockout() -> accounts.Lockout:
    cfg = current_app.config
    return accounts.Lockout(cfg["LOGIN_LOCKOUT_ATTEMPTS"], cfg["LOGIN_LOCKOUT_MINUTES"])


@bp.route("/")
def index():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(home_for(current_user))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        if g.site.is_platform:
            result = accounts.sign_in_platform_user(
                form.email.data, form.password.data, request.remote_addr, _lockout()
            )
        else:
            result = accounts.sign_in_tenant_user(
                g.tenant, form.email.data, form.password.data, request.remote_addr, _lockout()
            )
        if result.ok:
            two_factor.clear_pending()
            login_user(result.account)
            return redirect(_safe_next(request.args.get("next")) or home_for(result.account))
        if result.password_ok:
            # Not signed in yet: the code (or the enrolment) comes first.
            return redirect(
                two_factor.start_pending(result.account, result.next_step, _safe_next(request.args.get("next")))
            )
        message = OUTCOME_MESSAGES.get(result.outcome, GENERIC_FAILURE)
        error = str(message) % {"minutes": current_app.config["LOGIN_LOCKOUT_MINUTES"]}
    status = 200 if error is None else 401
    return render("auth/login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
def logout():
    form = ActionForm()
    if form.validate_on_submit():
        two_factor.clear_pending()
        logout_user()
        flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if g.site.is_platform:
            account = db.session.execute(
                sa.select(PlatformUser).where(PlatformUser.email == email)
            ).scalar_one_or_none()
        else:
            account = db.session.execute(
                sa.select(User).where(User.tenant_id == g.tenant.id, User.email == email)
            ).scalar_one_or_none()
        if account is not None and account.is_active and account.has_password:
            invitations.send_password_reset(account, g.tenant)
        # The same answer whether or not the account exists: no way to probe for e-mails.
        flash(_("If an account exists for that address, we have sent it a link to choose a new password."), "info")
        return redirect(url_for("auth.login"))
    return render("auth/forgot_password.html", form=form)


def _account_for(purpose: str, token: str, max_age: int):
    account_ref, signed = tokens.account_id(current_app.config["SECRET_KEY"], purpose, token, max_age)
    g_user = load_user(account_ref)
    tokens.check_unused(g_user, signed)
    return g_user


def _set_password_view(purpose: str, token: str, max_age: int, template: str, done: str):
    try:
        account = _account_for(purpose, token, max_age)
    except tokens.TokenError as exc:
        return render("auth/token_invalid.html", reason=exc.reason), 400
    form = SetPasswordForm()
    if form.validate_on_submit():
        accounts.set_password(account, form.password.data)
        db.session.commit()
        logout_user()
        flash(done, "success")
        return redirect(url_for("auth.login"))
    return render(template, form=form, account=account)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    return _set_password_view(
        "password-reset",
        token,
        current_app.config["PASSWORD_RESET_MAX_AGE"],
        "auth/reset_password.html",
        _("Your password is changed. Sign in with the new one."),
    )


@bp.route("/invitation/<token>", methods=["GET", "POST"])
def accept_invitation(token: str):
    return _set_password_view(
        "invitation",
        token,
        current_app.config["INVITATION_MAX_AGE"],
        "auth/accept_invitation.html",
        _("Your password is set. Sign in to continue."),
    )


# Register the sign-up and two-factor views on bp.
from portal.auth import signup, two_factor  # noqa: E402, F401
