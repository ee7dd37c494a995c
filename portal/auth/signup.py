"""Signing up a business on a tenant's portal, and verifying the sign-up's e-mail address.

Only on a tenant's host. The answer to a sign-up is the same whether or not the address has an
account here (the account holder gets an e-mail saying so instead of a link).
"""

from __future__ import annotations

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from onboarding import signup as signups
from portal import onboarding_mail
from portal.auth import bp, home_for
from portal.forms import ActionForm, field_error, note_expired
from portal.theming import render
from tenants import passwords, tokens
from tenants.errors import InvalidInput


class SignupForm(FlaskForm):
    business_name = StringField(
        _l("Business name"),
        validators=[DataRequired(), Length(max=signups.NAME_MAX)],
        description=_l("How your customers know you; the legal details come later."),
    )
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=passwords.MAX_LENGTH)])
    confirm = PasswordField(
        _l("Repeat the password"), validators=[DataRequired(), EqualTo("password", _l("The two passwords differ."))]
    )


def _tenant_host_only() -> None:
    if not g.site.is_tenant:
        abort(404)


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    _tenant_host_only()
    if current_user.is_authenticated and request.method == "GET":
        return redirect(home_for(current_user))
    form = SignupForm()
    if form.validate_on_submit():
        try:
            started = signups.start(
                g.tenant.id, form.business_name.data, form.email.data, form.password.data, request.remote_addr
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            if started.signup is not None:
                onboarding_mail.send_signup_verification(g.tenant, started.signup)
            elif started.existing is not None:
                onboarding_mail.send_signup_existing(g.tenant, started.existing)
            return redirect(url_for("auth.signup_sent"))
    else:
        note_expired(form)
    status = 422 if form.errors or form.form_errors else 200
    return render("auth/signup.html", form=form, min_length=passwords.MIN_LENGTH), status


@bp.route("/signup/sent")
def signup_sent():
    _tenant_host_only()
    return render("auth/signup_sent.html")


@bp.route("/signup/verify/<token>", methods=["GET", "POST"])
def verify_signup(token: str):
    _tenant_host_only()
    try:
        pending = signups.pending(
            g.tenant.id, current_app.config["SECRET_KEY"], token, current_app.config["SIGNUP_MAX_AGE"]
        )
    except tokens.TokenError as exc:
        return render("auth/signup_link_invalid.html", reason=exc.reason), 400
    form = ActionForm()
    if form.validate_on_submit():
        try:
            owner = signups.verify(pending, request.remote_addr)
        except tokens.TokenError as exc:
            return render("auth/signup_link_invalid.html", reason=exc.reason), 400
        except InvalidInput as exc:
            flash(exc.message, "error")
            return redirect(url_for("auth.login"))
        flash(
            _("Your e-mail address is verified. Sign in as %(email)s to set up your business.", email=owner.email),
            "success",
        )
        return redirect(url_for("auth.login"))
    return render("auth/verify_signup.html", form=form, signup=pending)
