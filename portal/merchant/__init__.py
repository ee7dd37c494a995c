"""The merchant dashboard: the merchant's overview, team and API keys.

Only on a tenant's host, for that merchant's users. Payments, balances, settlements and
withdrawals arrive with the payment-core and clearing issues.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, abort, flash, g, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from core.db import db
from portal import invitations, theming
from portal.access import host_guard, merchant_role_required
from portal.forms import ActionForm, ApiKeyForm, InviteUserForm, RollApiKeyForm, field_error
from portal.sites import current_actor
from tenants import api_keys, provisioning
from tenants.api_keys import ApiKey
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES, User

bp = Blueprint("merchant", __name__)
bp.before_request(host_guard("tenant"))


def _team():
    return (
        db.session.execute(
            sa.select(User)
            .where(User.tenant_id == current_user.tenant_id, User.merchant_id == current_user.merchant_id)
            .order_by(User.created_at)
        )
        .scalars()
        .all()
    )


@bp.route("/")
@merchant_role_required(*MERCHANT_ROLES)
def dashboard():
    return theming.render(
        "merchant/dashboard.html", merchant=current_user.merchant, team=_team(), **reports.dashboard_charts()
    )


@bp.route("/team", methods=["GET", "POST"])
@merchant_role_required("owner")
def team():
    form = InviteUserForm()
    form.role.choices = [(role, role.title()) for role in MERCHANT_ROLES]
    if form.validate_on_submit():
        try:
            user = provisioning.invite_user(
                current_user.tenant_id,
                form.email.data,
                form.role.data,
                current_actor(),
                merchant_id=current_user.merchant_id,
                name=form.name.data or "",
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            invitations.send_invitation(g.tenant, user)
            flash(_("An invitation went to %(email)s.", email=user.email), "success")
            return redirect(url_for("merchant.team"))
    status = 422 if form.errors else 200
    return theming.render("merchant/team.html", form=form, team=_team(), merchant=current_user.merchant), status


# --- API keys ----------------------------------------------------------------------------
# Everyone of the merchant sees the list; only the owner creates, rolls and revokes. A new
# secret is rendered straight into the answer of the POST that made it (never into the session,
# a flash message or a URL), with `Cache-Control: no-store`, and is not retrievable afterwards.


def _api_base() -> str:
    """What a Stripe SDK's `api_base` is set to: this host (the SDK adds `/v1` itself)."""
    return request.host_url.rstrip("/")


def _api_keys_page(create_form: ApiKeyForm | None = None, status: int = 200):
    html = theming.render(
        "merchant/api_keys.html",
        merchant=current_user.merchant,
        keys=api_keys.list_keys(current_user.tenant_id, current_user.merchant_id),
        create_form=create_form or ApiKeyForm(formdata=None),
        roll_form=RollApiKeyForm(formdata=None),
        action_form=ActionForm(),
        api_base=_api_base(),
        now=api_keys.utcnow(),
    )
    return html, status


def _secret_page(key: ApiKey, secret: str, rolled: ApiKey | None = None):
    response = make_response(
        theming.render(
            "merchant/api_key_secret.html",
            key=key,
            secret=secret,
            rolled=rolled,
            api_base=_api_base(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _get_key(key_id: uuid.UUID) -> ApiKey:
    """A key of the signed-in user's own merchant; any other id (another merchant's, another
    tenant's, none) is 404."""
    key = db.session.execute(
        sa.select(ApiKey).where(
            ApiKey.tenant_id == g.tenant.id,
            ApiKey.merchant_id == current_user.merchant_id,
            ApiKey.id == key_id,
        )
    ).scalar_one_or_none()
    if key is None:
        abort(404)
    return key


@bp.route("/api-keys", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def api_keys_list():
    return _api_keys_page()


@bp.route("/api-keys", methods=["POST"])
@merchant_role_required("owner")
def create_api_key():
    form = ApiKeyForm()
    if form.validate_on_submit():
        try:
            key, secret = api_keys.create_key(
                current_user.tenant_id, current_user.merchant_id, form.mode.data, form.name.data, current_actor()
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            return _secret_page(key, secret)
    return _api_keys_page(form, 422)


@bp.route("/api-keys/<uuid:key_id>/roll", methods=["POST"])
@merchant_role_required("owner")
def roll_api_key(key_id: uuid.UUID):
    key = _get_key(key_id)
    form = RollApiKeyForm()
    if not form.validate_on_submit():
        flash(_("The key was not rolled: the form was incomplete or has expired. Try again."), "error")
        return redirect(url_for("merchant.api_keys_list"))
    try:
        new_key, secret = api_keys.roll_key(key, form.expires_in.data, current_actor())
    except InvalidInput as exc:
        flash(exc.message, "error")
        return redirect(url_for("merchant.api_keys_list"))
    return _secret_page(new_key, secret, rolled=key)


@bp.route("/api-keys/<uuid:key_id>/revoke", methods=["POST"])
@merchant_role_required("owner")
def revoke_api_key(key_id: uuid.UUID):
    key = _get_key(key_id)
    if ActionForm().validate_on_submit():
        if api_keys.revoke_key(key, current_actor()):
            flash(
                _("The key %(name)s (%(masked)s) is revoked: it no longer works.", name=key.name, masked=key.masked),
                "success",
            )
        else:
            flash(_("The key %(name)s (%(masked)s) was already revoked.", name=key.name, masked=key.masked), "error")
    return redirect(url_for("merchant.api_keys_list"))


# Register the views of the merchant's pages on bp.
from portal.merchant import (  # noqa: E402, F401
    catalog,
    links,
    onboarding,
    payments,
    payouts,
    reports,
    settings,
    settlements,
    terminals,
    webhooks,
)
