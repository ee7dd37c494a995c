"""The platform console: tenants (list, provision, detail, suspend), the audit log of every tenant
(`audit.py`), system health (`health.py`) and the jobs dashboard (`jobs_dashboard.py`), for platform
admins only.

Only on the platform host, whose requests run in platform scope (the named cross-tenant path).
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from billing import schedules
from core.db import db
from portal import invitations, theming
from portal.access import host_guard, platform_admin_required
from portal.forms import ActionForm, TenantForm, field_error
from portal.pagination import newest_first, search_term
from portal.sites import current_actor, tenant_base_url
from tenants import provisioning
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope
from tenants.models import AuditEvent, Tenant, User

bp = Blueprint("platform", __name__, template_folder="templates")
bp.before_request(host_guard("platform"))


def _theme_choices():
    return [(name, theme.label) for name, theme in theming.themes().items()]


@bp.route("/")
@platform_admin_required
def tenants():
    statement = sa.select(Tenant)
    pattern = search_term(request.args.get("q"))
    if pattern:
        statement = statement.where(sa.or_(Tenant.name.ilike(pattern), Tenant.slug.ilike(pattern)))
    status = request.args.get("status")
    if status in ("active", "suspended"):
        statement = statement.where(Tenant.status == status)
    page = newest_first(statement, Tenant, request.args.get("after"), current_app.config["PAGE_SIZE"])
    return render_template(
        "platform/tenants.html", page=page, q=request.args.get("q", ""), status=status or "", base_url=tenant_base_url
    )


@bp.route("/tenants/new", methods=["GET", "POST"])
@platform_admin_required
def new_tenant():
    form = TenantForm()
    form.theme.choices = _theme_choices()
    if form.validate_on_submit():
        spec = provisioning.TenantSpec(
            name=form.name.data,
            slug=form.slug.data,
            admin_email=form.admin_email.data,
            theme=form.theme.data,
            domains=form.domains.data or "",
        )
        try:
            tenant, admin = provisioning.provision_tenant(
                spec, current_actor(), {name: theme.colors for name, theme in theming.themes().items()}
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            invitations.send_invitation(tenant, admin)
            flash(
                _("Tenant %(name)s is ready. An invitation went to %(email)s.", name=tenant.name, email=admin.email),
                "success",
            )
            return redirect(url_for("platform.tenant", tenant_id=tenant.id))
    return render_template("platform/new_tenant.html", form=form), 200 if not form.errors else 422


def _get_tenant(tenant_id: uuid.UUID) -> Tenant:
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        abort(404)
    return tenant


class PlatformFeeForm(FlaskForm):
    percent = StringField(
        _l("Platform fee (%)"),
        validators=[DataRequired(_l("Give the percentage, e.g. 0.5 (0 for no platform fee).")), Length(max=20)],
        description=_l(
            "The platform's share of every amount the tenant's merchants capture, e.g. 0.5. Applies from now."
        ),
    )


@bp.route("/tenants/<uuid:tenant_id>")
@platform_admin_required
def tenant(tenant_id: uuid.UUID):
    return _tenant_page(_get_tenant(tenant_id), PlatformFeeForm())


def _tenant_page(item: Tenant, fee_form: PlatformFeeForm, status: int = 200):
    admins = (
        db.session.execute(
            sa.select(User).where(User.tenant_id == item.id, User.role == "admin").order_by(User.created_at)
        )
        .scalars()
        .all()
    )
    events = (
        db.session.execute(
            sa.select(AuditEvent)
            .where(AuditEvent.tenant_id == item.id)
            .order_by(AuditEvent.created_at.desc())
            .limit(20)
        )
        .scalars()
        .all()
    )
    with platform_scope(db.session):
        fees = schedules.platform_fees(item.id)
        fee_in_force = schedules.platform_fee_in_force(item.id)
    return render_template(
        "platform/tenant.html",
        tenant=item,
        admins=admins,
        events=events,
        action_form=ActionForm(),
        base_url=tenant_base_url(item),
        fee_form=fee_form,
        platform_fees=fees,
        platform_fee=fee_in_force,
    ), status


@bp.route("/tenants/<uuid:tenant_id>/platform-fee", methods=["POST"])
@platform_admin_required
def set_platform_fee(tenant_id: uuid.UUID):
    item = _get_tenant(tenant_id)
    form = PlatformFeeForm()
    if not form.validate_on_submit():
        return _tenant_page(item, form, 422)
    try:
        with platform_scope(db.session):
            fee = schedules.set_platform_fee(item.id, form.percent.data, current_actor())
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _tenant_page(item, form, 422)
    message = _(
        "The platform fee of %(name)s is %(percent)s%% from now on. The next payment uses the new fee.",
        name=item.name,
        percent=f"{fee.percent.normalize():f}",
    )
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("platform.tenant", tenant_id=item.id))


@bp.route("/tenants/<uuid:tenant_id>/status", methods=["POST"])
@platform_admin_required
def set_status(tenant_id: uuid.UUID):
    item = _get_tenant(tenant_id)
    form = ActionForm()
    status = request.form.get("status")
    if form.validate_on_submit() and status in ("active", "suspended"):
        provisioning.set_tenant_status(item, status, current_actor())
        flash(
            _("%(name)s is now active.", name=item.name)
            if status == "active"
            else _("%(name)s is now suspended.", name=item.name),
            "success",
        )
    else:
        flash(_("Choose active or suspended."), "error")
    return redirect(url_for("platform.tenant", tenant_id=item.id))


@bp.route("/tenants/<uuid:tenant_id>/admins/<uuid:user_id>/invite", methods=["POST"])
@platform_admin_required
def resend_invitation(tenant_id: uuid.UUID, user_id: uuid.UUID):
    item = _get_tenant(tenant_id)
    user = db.session.execute(
        sa.select(User).where(User.tenant_id == item.id, User.id == user_id, User.role == "admin")
    ).scalar_one_or_none()
    if user is None:
        abort(404)
    if ActionForm().validate_on_submit():
        if user.has_password:
            flash(_("%(email)s has already set a password.", email=user.email), "error")
        else:
            invitations.send_invitation(item, user)
            flash(_("A new invitation went to %(email)s.", email=user.email), "success")
    return redirect(url_for("platform.tenant", tenant_id=item.id))


# Register the audit log, health and risk views on bp.
from portal.platform import audit, health, risk  # noqa: E402, F401
