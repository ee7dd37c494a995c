"""Tenant console: the review of merchants' onboarding (KYC).

The queue lists applications oldest first, with their age (searchable by name, filterable by
status, keyset-paged); the review page shows the business profile beside the documents. Admins
and operators review, request changes and reject; approving sets the fee schedule, which only
admins manage, so only admins approve. Every decision is audited (`onboarding.review`) and its
message goes to the merchant's owners by e-mail.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from billing.models import FeeSchedule
from billing.schedules import schedule_of
from core.db import db
from core.money import to_major
from onboarding import documents, review
from onboarding import profile as profiles
from onboarding.models import MerchantProfile
from portal import onboarding_mail, theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.forms import field_error, note_expired
from portal.kyc_files import send_document
from portal.merchant.onboarding import DOCUMENT_KIND_LABELS, STATUS_LABELS
from portal.pagination import oldest_first, search_term
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import ONBOARDING_STATUSES, Merchant

KYC_REVIEWERS = ("admin", "operator")
KYC_APPROVERS = ("admin",)  # approving assigns the fee schedule (`portal.console.fees.FEE_MANAGERS`)
RISK_LABELS = {"low": _l("Low"), "medium": _l("Medium"), "high": _l("High")}


class ApproveForm(FlaskForm):
    schedule_id = SelectField(_l("Fee schedule"))
    risk_level = SelectField(
        _l("Risk level"),
        choices=[SelectChoice(value="", label="—"), *(SelectChoice(value=k, label=v) for k, v in RISK_LABELS.items())],
    )
    message = TextAreaField(
        _l("Message to the merchant"),
        validators=[Optional(), Length(max=review.MESSAGE_MAX)],
        description=_l("Optional; e-mailed to the merchant's owner."),
    )


class DecisionForm(FlaskForm):
    message = TextAreaField(
        _l("Message to the merchant"),
        validators=[Optional(), Length(max=review.MESSAGE_MAX)],
        description=_l("Say why, and what to do next; e-mailed to the merchant's owner."),
    )


def _approve_form(merchant: Merchant, formdata=True) -> ApproveForm:
    form = ApproveForm() if formdata else ApproveForm(formdata=None)
    current, is_default = schedule_of(g.tenant.id, merchant.id)
    options = db.session.execute(
        sa.select(FeeSchedule).where(FeeSchedule.tenant_id == g.tenant.id).order_by(FeeSchedule.name)
    ).scalars()
    form.schedule_id.choices = [
        SelectChoice(value="", label=_("Tenant default")),
        *(SelectChoice(value=str(s.id), label=s.name) for s in options),
    ]
    if not formdata:
        form.schedule_id.data = "" if is_default or current is None else str(current.id)
    return form


def _age(since: datetime, now: datetime) -> str:
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 3600:
        return _("%(n)s min", n=max(seconds // 60, 1))
    if seconds < 2 * 86400:
        return _("%(n)s h", n=seconds // 3600)
    return _("%(n)s days", n=seconds // 86400)


@bp.route("/onboarding")
@tenant_role_required(*KYC_REVIEWERS)
def onboarding_queue():
    args = request.args
    status = args.get("status") or "submitted"
    error = None
    if status not in ONBOARDING_STATUSES:
        error, status = _("%(status)s is not an onboarding status.", status=args.get("status")), "submitted"
    statement = (
        sa.select(Merchant)
        .outerjoin(
            MerchantProfile,
            sa.and_(MerchantProfile.tenant_id == Merchant.tenant_id, MerchantProfile.merchant_id == Merchant.id),
        )
        .where(Merchant.tenant_id == g.tenant.id, Merchant.onboarding_status == status)
    )
    pattern = search_term(args.get("q"))
    if pattern:
        statement = statement.where(sa.or_(Merchant.name.ilike(pattern), MerchantProfile.legal_name.ilike(pattern)))
    page = oldest_first(
        statement, Merchant, Merchant.onboarding_changed_at, args.get("after"), current_app.config["PAGE_SIZE"]
    )
    now = datetime.now(UTC)
    return theming.render(
        "console/onboarding_queue.html",
        page=page,
        q=args.get("q", ""),
        status=status,
        status_error=error,
        statuses=ONBOARDING_STATUSES,
        status_labels=STATUS_LABELS,
        age=lambda merchant: _age(merchant.onboarding_changed_at, now),
    )


def _merchant(merchant_id: uuid.UUID) -> Merchant:
    merchant = db.session.execute(
        sa.select(Merchant).where(Merchant.tenant_id == g.tenant.id, Merchant.id == merchant_id)
    ).scalar_one_or_none()
    if merchant is None:
        abort(404)
    return merchant


def _review_page(merchant: Merchant, approve_form=None, changes_form=None, reject_form=None, status: int = 200):
    profile = profiles.profile_of(g.tenant.id, merchant.id)
    schedule, is_default = schedule_of(g.tenant.id, merchant.id)
    return theming.render(
        "console/onboarding_review.html",
        merchant=merchant,
        profile=profile,
        volume=(
            f"{to_major(profile.monthly_volume, profile.volume_currency):,} {profile.volume_currency}"
            if profile is not None and profile.monthly_volume is not None
            else None
        ),
        bank_account=profiles.bank_account_of(g.tenant.id, merchant.id),
        documents=documents.documents_of(g.tenant.id, merchant.id),
        missing=review.missing(g.tenant.id, merchant.id),
        kind_labels=DOCUMENT_KIND_LABELS,
        status_labels=STATUS_LABELS,
        risk_labels=RISK_LABELS,
        fee_schedule=schedule,
        fee_schedule_is_default=is_default,
        approve_form=approve_form or _approve_form(merchant, formdata=False),
        changes_form=changes_form or DecisionForm(formdata=None, prefix="changes"),
        reject_form=reject_form or DecisionForm(formdata=None, prefix="reject"),
        can_approve=g.user_role in KYC_APPROVERS,
        age=_age(merchant.onboarding_changed_at, datetime.now(UTC)),
    ), status


@bp.route("/onboarding/<uuid:merchant_id>")
@tenant_role_required(*KYC_REVIEWERS)
def onboarding_review(merchant_id: uuid.UUID):
    return _review_page(_merchant(merchant_id))


@bp.route("/onboarding/<uuid:merchant_id>/documents/<uuid:document_id>")
@tenant_role_required(*KYC_REVIEWERS)
def onboarding_document(merchant_id: uuid.UUID, document_id: uuid.UUID):
    merchant = _merchant(merchant_id)
    return send_document(documents.get(g.tenant.id, merchant.id, document_id))


def _decided(merchant: Merchant):
    onboarding_mail.send_decision(g.tenant, merchant, review.owners(g.tenant.id, merchant.id))
    messages = {
        "approved": _("%(name)s is approved; the owner is told by e-mail.", name=merchant.name),
        "rejected": _("%(name)s is rejected; the owner is told by e-mail.", name=merchant.name),
        "changes_requested": _("Changes are requested from %(name)s; the owner is told by e-mail.", name=merchant.name),
    }
    flash(messages[merchant.onboarding_status], "success")
    return redirect(url_for("console.onboarding_review", merchant_id=merchant.id))


@bp.route("/onboarding/<uuid:merchant_id>/approve", methods=["POST"])
@tenant_role_required(*KYC_APPROVERS)
def approve_merchant(merchant_id: uuid.UUID):
    merchant = _merchant(merchant_id)
    form = _approve_form(merchant)
    if not form.validate_on_submit():
        note_expired(form)
        return _review_page(merchant, approve_form=form, status=422)
    schedule_id = uuid.UUID(form.schedule_id.data) if form.schedule_id.data else None
    try:
        decided = review.decide(
            g.tenant.id,
            merchant.id,
            "approve",
            form.message.data or "",
            current_actor(),
            risk_level=form.risk_level.data or None,
            schedule_id=schedule_id,
        )
    except InvalidInput as exc:
        if exc.field is None:  # no longer waiting for review: the decision forms are gone
            flash(exc.message, "error")
            return redirect(url_for("console.onboarding_review", merchant_id=merchant.id))
        field_error(form, exc)
        return _review_page(_merchant(merchant_id), approve_form=form, status=422)
    return _decided(decided)


def _decide(merchant_id: uuid.UUID, decision: str, prefix: str):
    merchant = _merchant(merchant_id)
    form = DecisionForm(prefix=prefix)
    forms = {"changes_form" if prefix == "changes" else "reject_form": form}
    if not form.validate_on_submit():
        note_expired(form)
        return _review_page(merchant, status=422, **forms)
    try:
        decided = review.decide(g.tenant.id, merchant.id, decision, form.message.data or "", current_actor())
    except InvalidInput as exc:
        if exc.field is None:
            flash(exc.message, "error")
            return redirect(url_for("console.onboarding_review", merchant_id=merchant.id))
        field_error(form, exc)
        return _review_page(_merchant(merchant_id), status=422, **forms)
    return _decided(decided)


@bp.route("/onboarding/<uuid:merchant_id>/request-changes", methods=["POST"])
@tenant_role_required(*KYC_REVIEWERS)
def request_merchant_changes(merchant_id: uuid.UUID):
    return _decide(merchant_id, "request_changes", "changes")


@bp.route("/onboarding/<uuid:merchant_id>/reject", methods=["POST"])
@tenant_role_required(*KYC_REVIEWERS)
def reject_merchant(merchant_id: uuid.UUID):
    return _decide(merchant_id, "reject", "reject")


@bp.before_request
def _user_role():
    from flask_login import current_user

    g.user_role = getattr(current_user, "role", None) if current_user.is_authenticated else None
