"""The merchant dashboard: the merchant's overview and team.

Only on a tenant's host, for that merchant's users. Payments, balances, settlements and
withdrawals arrive with the payment-core and clearing issues.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, g, redirect, url_for
from flask_login import current_user

from core.db import db
from portal import invitations, theming
from portal.access import host_guard, merchant_role_required
from portal.forms import InviteUserForm, field_error
from portal.sites import current_actor
from tenants import provisioning
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
    return theming.render("merchant/dashboard.html", merchant=current_user.merchant, team=_team())


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
            flash(f"An invitation went to {user.email}.", "success")
            return redirect(url_for("merchant.team"))
    status = 422 if form.errors else 200
    return theming.render("merchant/team.html", form=form, team=_team(), merchant=current_user.merchant), status
