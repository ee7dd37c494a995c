"""Submitting an application and the tenant's decision on it (use cases).

    draft ──submit──▶ submitted ──approve──▶ approved   (fee schedule and risk level set)
                        │  ▲    └──reject───▶ rejected
      request changes   ▼  │ submit
                  changes_requested

Only the transitions drawn are possible; each locks the merchant row, records the status before
and after in the audit log and commits. A decision carries the reviewer's message, which the
merchant sees on its dashboard and its owner receives by e-mail (sent by the caller).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from billing import schedules
from core.db import db
from core.i18n import gettext, lazy_gettext
from onboarding import documents
from onboarding.models import MerchantProfile
from onboarding.profile import EDITABLE, bank_account_of, locked_merchant, profile_of
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import RISK_LEVELS, Merchant, User

REQUIRED_DOCUMENTS = ("business_licence", "representative_id", "bank_proof")
DECISIONS = {"approve": "approved", "reject": "rejected", "request_changes": "changes_requested"}
MESSAGE_MAX = 2000
# What a submission lacks, as the applicant reads it (translated when shown).
PROFILE_GAPS = {
    "legal_name": lazy_gettext("Fill in the legal name."),
    "registration_number": lazy_gettext("Fill in the registration number."),
    "legal_representative": lazy_gettext("Fill in the legal representative."),
    "address": lazy_gettext("Fill in the address."),
    "country": lazy_gettext("Fill in the country."),
}
DOCUMENT_LABELS = {
    "business_licence": lazy_gettext("Business licence"),
    "representative_id": lazy_gettext("ID of the legal representative"),
    "bank_proof": lazy_gettext("Bank account proof"),
    "other": lazy_gettext("Other"),
}


def missing(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[str]:
    """What the application still lacks before it can be submitted (empty: complete), in the
    reader's language."""
    profile: MerchantProfile | None = profile_of(tenant_id, merchant_id)
    gaps = [str(gap) for name, gap in PROFILE_GAPS.items() if profile is None or not getattr(profile, name)]
    if profile is None or profile.monthly_volume is None:
        gaps.append(gettext("Fill in the expected monthly volume."))
    if bank_account_of(tenant_id, merchant_id) is None:
        gaps.append(gettext("Give the bank account for payouts."))
    present = {document.kind for document in documents.documents_of(tenant_id, merchant_id)}
    gaps += [
        gettext("Upload the document: %(document)s.", document=DOCUMENT_LABELS[kind])
        for kind in REQUIRED_DOCUMENTS
        if kind not in present
    ]
    return gaps


def _transition(merchant: Merchant, status: str, actor: audit.Actor, action: str, **extra) -> None:
    before = {"onboarding_status": merchant.onboarding_status, "review_message": merchant.review_message}
    before.update({key: getattr(merchant, key) for key in extra if hasattr(merchant, key)})
    merchant.onboarding_status = status
    merchant.onboarding_changed_at = datetime.now(UTC)
    for key, value in extra.items():
        if hasattr(merchant, key):
            setattr(merchant, key, value)
    after = {"onboarding_status": status, "review_message": merchant.review_message}
    after.update(extra)
    audit.record(merchant.tenant_id, actor, action, "merchant", merchant.id, audit.changes(before, after))


def submit(tenant_id: uuid.UUID, merchant_id: uuid.UUID, actor: audit.Actor) -> Merchant:
    """Send the application for review. Raises InvalidInput listing what is missing. Commits."""
    merchant = locked_merchant(tenant_id, merchant_id)
    if merchant.onboarding_status not in EDITABLE:
        status = merchant.onboarding_status.replace("_", " ")
        db.session.rollback()
        raise InvalidInput(gettext("The application is %(status)s: there is nothing to submit.", status=status))
    gaps = missing(tenant_id, merchant_id)
    if gaps:
        db.session.rollback()
        raise InvalidInput(gettext("The application is not complete yet: %(gaps)s", gaps=" ".join(gaps)))
    _transition(merchant, "submitted", actor, "merchant.kyc_submitted")
    db.session.commit()
    return merchant


def decide(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    decision: str,
    message: str,
    actor: audit.Actor,
    *,
    risk_level: str | None = None,
    schedule_id: uuid.UUID | None = None,
) -> Merchant:
    """A reviewer's decision on a submitted application: approve (with a risk level and a fee
    schedule, None meaning the tenant's default), reject, or request changes (both need a message
    to the merchant). Raises InvalidInput naming the field. Commits."""
    if decision not in DECISIONS:
        raise InvalidInput(gettext("Choose approve, reject or request changes."), "decision")
    text = (message or "").strip()
    if len(text) > MESSAGE_MAX:
        raise InvalidInput(gettext("Use at most %(limit)s characters.", limit=MESSAGE_MAX), "message")
    if decision != "approve" and not text:
        raise InvalidInput(gettext("Tell the merchant why, and what to do next."), "message")
    if decision == "approve" and risk_level not in RISK_LEVELS:
        raise InvalidInput(gettext("Choose the merchant's risk level."), "risk_level")
    try:
        merchant = locked_merchant(tenant_id, merchant_id)
        if merchant.onboarding_status != "submitted":
            status = merchant.onboarding_status.replace("_", " ")
            raise InvalidInput(
                gettext("This application is %(status)s, not waiting for review: nothing was changed.", status=status)
            )
        if decision == "approve":
            schedules.assign(tenant_id, merchant_id, schedule_id, actor)
            _transition(
                merchant,
                "approved",
                actor,
                "merchant.kyc_approved",
                review_message=text or None,
                risk_level=risk_level,
            )
        else:
            _transition(
                merchant, DECISIONS[decision], actor, f"merchant.kyc_{DECISIONS[decision]}", review_message=text
            )
    except InvalidInput:
        db.session.rollback()
        raise
    db.session.commit()
    return merchant


def owners(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[User]:
    """Who receives the decision by e-mail: the merchant's active owners."""
    return list(
        db.session.execute(
            sa.select(User)
            .where(
                User.tenant_id == tenant_id,
                User.merchant_id == merchant_id,
                User.role == "owner",
                User.is_active.is_(True),
            )
            .order_by(User.created_at)
        )
        .scalars()
        .all()
    )
