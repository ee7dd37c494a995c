"""The tenant console: dashboard, brand (edit, preview, publish), users, merchants, audit log.

Only on a tenant's host, for that tenant's staff. Admins manage brand and users; admins and
operators manage merchants; finance reads.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from clearing import listings
from core.db import db
from portal import audit_log as audit_filters
from portal import invitations, reporting, sites, theming
from portal.access import host_guard, tenant_role_required
from portal.forms import (
    ActionForm,
    BrandForm,
    InviteUserForm,
    LoginForm,
    LogoForm,
    MerchantForm,
    PreferencesForm,
    field_error,
    note_expired,
)
from portal.merchant.onboarding import STATUS_LABELS as ONBOARDING_LABELS
from portal.pagination import newest_first, search_term
from portal.sites import current_actor
from tenants import branding, provisioning
from tenants.errors import InvalidInput
from tenants.models import TENANT_ROLES, AuditEvent, Merchant, User

bp = Blueprint("console", __name__)
bp.before_request(host_guard("tenant"))

STAFF = TENANT_ROLES
MERCHANT_MANAGERS = ("admin", "operator")


@bp.route("/")
@tenant_role_required(*STAFF)
def dashboard():
    counts = {
        "merchants": db.session.scalar(sa.select(sa.func.count()).select_from(Merchant)),
        "users": db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.merchant_id.is_(None))),
    }
    recent = db.session.execute(sa.select(AuditEvent).order_by(AuditEvent.created_at.desc()).limit(10)).scalars().all()
    return theming.render("console/dashboard.html", counts=counts, events=recent)


# --- brand -------------------------------------------------------------------------------


def _brand_form(draft, posted: bool) -> BrandForm:
    """The brand form: what the user typed when this form was posted, else the draft."""
    form = BrandForm() if posted else BrandForm(formdata=None, data=draft.values())
    form.theme.choices = [(name, theme.label) for name, theme in theming.themes().items()]
    return form


def _preferences_form(posted: bool) -> PreferencesForm:
    """The language and time zone form: what the user typed when it was posted, else the tenant's."""
    if posted:
        return PreferencesForm()
    return PreferencesForm(
        formdata=None, data={"default_locale": g.tenant.default_locale, "time_zone": g.tenant.time_zone}
    )


def _branding_page(form: BrandForm, preferences_form: PreferencesForm):
    draft = branding.brand(g.tenant.id, "draft")
    published = branding.brand(g.tenant.id, "published")
    rejected = form.errors or form.form_errors or preferences_form.errors or preferences_form.form_errors
    return theming.render(
        "console/branding.html",
        form=form,
        preferences_form=preferences_form,
        logo_form=LogoForm(),
        action_form=ActionForm(),
        draft=draft,
        published=published,
        has_changes=draft.values() != published.values(),
    ), 422 if rejected else 200


@bp.route("/branding", methods=["GET", "POST"])
@tenant_role_required("admin")
def branding_edit():
    draft = branding.brand(g.tenant.id, "draft")
    form = _brand_form(draft, posted=request.method == "POST")
    if form.validate_on_submit():
        try:
            branding.save_draft(g.tenant.id, form.data, theming.themes(), current_actor())
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("Draft saved. Preview it, then publish it to make it live."), "success")
            return redirect(url_for("console.branding_edit"))
    return _branding_page(form, _preferences_form(posted=False))


@bp.route("/branding/preferences", methods=["POST"])
@tenant_role_required("admin")
def branding_preferences():
    """The portal's default language and time zone (for everyone without a choice of their own). Audited."""
    form = _preferences_form(posted=True)
    if form.validate_on_submit():
        try:
            changed = provisioning.set_tenant_preferences(
                g.tenant, form.default_locale.data, form.time_zone.data, current_actor()
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("Language and time zone saved.") if changed else _("Nothing changed."), "success")
            return redirect(url_for("console.branding_edit"))
    else:
        note_expired(form)
    return _branding_page(_brand_form(branding.brand(g.tenant.id, "draft"), posted=False), form)


@bp.route("/branding/logo", methods=["POST"])
@tenant_role_required("admin")
def branding_logo():
    form = LogoForm()
    if form.validate_on_submit():
        data = form.logo.data.read(current_app.config["LOGO_MAX_BYTES"] + 1)
        try:
            branding.store_logo(
                g.tenant.id,
                data,
                current_app.config["UPLOAD_DIR"],
                current_app.config["LOGO_MAX_BYTES"],
                current_actor(),
            )
        except InvalidInput as exc:
            flash(exc.message, "error")
        else:
            flash(_("Logo added to the draft."), "success")
    else:
        for errors in form.errors.values():
            for message in errors:
                flash(message, "error")
    return redirect(url_for("console.branding_edit"))


@bp.route("/branding/preview")
@tenant_role_required("admin")
def branding_preview():
    """The sign-in page as it will look with the draft brand (what payers and merchants see first)."""
    sites.use_draft_brand()
    return theming.render("auth/login.html", form=LoginForm(), error=None, preview=True)


@bp.route("/branding/publish", methods=["POST"])
@tenant_role_required("admin")
def branding_publish():
    if ActionForm().validate_on_submit():
        diff = branding.publish(g.tenant.id, current_actor())
        flash(
            _("The brand is published.") if diff else _("Nothing changed: the draft equals the published brand."),
            "success",
        )
    return redirect(url_for("console.branding_edit"))


# --- users -------------------------------------------------------------------------------


def _staff_invite_form() -> InviteUserForm:
    form = InviteUserForm()
    form.role.choices = [(role, role.title()) for role in TENANT_ROLES]
    return form


@bp.route("/users", methods=["GET", "POST"])
@tenant_role_required("admin")
def users():
    form = _staff_invite_form()
    if form.validate_on_submit():
        try:
            user = provisioning.invite_user(
                g.tenant.id, form.email.data, form.role.data, current_actor(), name=form.name.data or ""
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            invitations.send_invitation(g.tenant, user)
            flash(_("An invitation went to %(email)s.", email=user.email), "success")
            return redirect(url_for("console.users"))
    statement = sa.select(User).where(User.merchant_id.is_(None))
    pattern = search_term(request.args.get("q"))
    if pattern:
        statement = statement.where(sa.or_(User.email.ilike(pattern), User.name.ilike(pattern)))
    page = newest_first(statement, User, request.args.get("after"), current_app.config["PAGE_SIZE"])
    status = 422 if form.errors else 200
    return theming.render("console/users.html", form=form, page=page, q=request.args.get("q", "")), status


def _get_user(user_id: uuid.UUID) -> User:
    user = db.session.execute(
        sa.select(User).where(User.tenant_id == g.tenant.id, User.id == user_id)
    ).scalar_one_or_none()
    if user is None:
        abort(404)
    return user


@bp.route("/users/<uuid:user_id>")
@tenant_role_required("admin")
def user(user_id: uuid.UUID):
    item = _get_user(user_id)
    return theming.render("console/user.html", user=item, action_form=ActionForm())


@bp.route("/users/<uuid:user_id>/invite", methods=["POST"])
@tenant_role_required("admin")
def resend_invitation(user_id: uuid.UUID):
    item = _get_user(user_id)
    if ActionForm().validate_on_submit():
        if item.has_password:
            flash(_("%(email)s has already set a password.", email=item.email), "error")
        else:
            invitations.send_invitation(g.tenant, item)
            flash(_("A new invitation went to %(email)s.", email=item.email), "success")
    return redirect(url_for("console.user", user_id=item.id))


@bp.route("/users/<uuid:user_id>/active", methods=["POST"])
@tenant_role_required("admin")
def set_user_active(user_id: uuid.UUID):
    item = _get_user(user_id)
    active = request.form.get("active") == "1"
    if ActionForm().validate_on_submit():
        try:
            if provisioning.set_user_active(item, active, current_actor()):
                flash(
                    _("%(email)s is enabled.", email=item.email)
                    if active
                    else _("%(email)s is disabled.", email=item.email),
                    "success",
                )
        except InvalidInput as exc:
            flash(exc.message, "error")
    return redirect(url_for("console.user", user_id=item.id))


# --- merchants ---------------------------------------------------------------------------


@bp.route("/merchants", methods=["GET", "POST"])
@tenant_role_required(*STAFF)
def merchants():
    form = MerchantForm()
    if request.method == "POST":
        if g.user_role_cannot_manage:
            abort(403)
        if form.validate_on_submit():
            try:
                merchant, owner = provisioning.create_merchant(
                    g.tenant.id, form.name.data, form.owner_email.data, current_actor()
                )
            except InvalidInput as exc:
                field_error(form, exc)
            else:
                invitations.send_invitation(g.tenant, owner)
                flash(
                    _("%(name)s is created; an invitation went to %(email)s.", name=merchant.name, email=owner.email),
                    "success",
                )
                return redirect(url_for("console.merchant", merchant_id=merchant.id))
    # The same filters as the list's export (`clearing.listings.merchants`).
    own = listings.Scope(g.tenant.id, None, audit_filters.zone_of(g.tenant))
    statement, errors = listings.merchants(own, request.args)
    page = newest_first(statement, Merchant, request.args.get("after"), current_app.config["PAGE_SIZE"])
    status = 422 if form.errors else 200
    return theming.render(
        "console/merchants.html",
        form=form,
        page=page,
        filters=listings.typed(request.args, listings.MERCHANT_FILTERS),
        errors=errors,
        paged=bool(request.args.get("after")),
        onboarding_labels=ONBOARDING_LABELS,
        can_review=current_user.role in ("admin", "operator"),
        **reporting.tools("console", "merchants", own),
    ), status


@bp.route("/merchants/<uuid:merchant_id>")
@tenant_role_required(*STAFF)
def merchant(merchant_id: uuid.UUID):
    item = db.session.execute(
        sa.select(Merchant).where(Merchant.tenant_id == g.tenant.id, Merchant.id == merchant_id)
    ).scalar_one_or_none()
    if item is None:
        abort(404)
    members = (
        db.session.execute(
            sa.select(User).where(User.tenant_id == g.tenant.id, User.merchant_id == item.id).order_by(User.created_at)
        )
        .scalars()
        .all()
    )
    return theming.render(
        "console/merchant.html",
        merchant=item,
        members=members,
        **fees.merchant_fee_context(item),
        **clearing.merchant_settlement_context(item),
        **payouts.merchant_payout_context(item),
    )


# --- audit log ---------------------------------------------------------------------------


@bp.route("/audit")
@tenant_role_required("admin")
def audit_log():
    zone = audit_filters.zone_of(g.tenant)
    own = listings.Scope(g.tenant.id, None, zone)
    found = audit_filters.filtered(request.args, own)
    page = newest_first(found.statement, AuditEvent, request.args.get("after"), current_app.config["PAGE_SIZE"])
    return theming.render(
        "console/audit.html",
        page=page,
        filters=found.values,
        errors=found.errors,
        paged=bool(request.args.get("after")),
        zone=zone,
        events_zone=zone,
        **reporting.tools("console", "audit", own),
    )


@bp.before_request
def _role_flags():
    g.user_role_cannot_manage = not (
        current_user.is_authenticated and getattr(current_user, "role", None) in MERCHANT_MANAGERS
    )


# Register the channel, routing, fee schedule, clearing, payout, reconciliation, risk and sign-in security
# views on bp (`fees`, `clearing` and `payouts` also serve the merchant page).
from portal.console import (  # noqa: E402, F401
    channels,
    clearing,
    fees,
    onboarding,
    payouts,
    reconciliation,
    reports,
    risk,
    security,
)
