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
from onboarding import documents
from onboarding.models import MerchantProfile
from onboarding.profile import EDITABLE, bank_account_of, locked_merchant, profile_of
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import RISK_LEVELS, Merchant, User

REQUIRED_DOCUMENTS = ("business_licence", "representative_id", "bank_proof")
DECISIONS = {"approve": "approved", "reject": "rejected", "request_changes": "changes_requested"}
MESSAGE_MAX = 2000
PROFILE_LABELS = {
    "legal_name": "the legal name",
    "registration_number": "the registration number",
    "legal_representative": "the legal representative",
    "address": "the address",
    "country": "the country",
}
DOCUMENT_LABELS = {
    "business_licence": "Business licence",
    "representative_id": "ID of the legal representative",
    "bank_proof": "Bank account proof",
    "other": "Other",
}


def missing(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[str]:
    """What the application still lacks before it can be submitted (empty: complete)."""
    profile: MerchantProfile | None = profile_of(tenant_id, merchant_id)
    gaps = [
        f"Fill in {label}." for name, label in PROFILE_LABELS.items() if profile is None or not getattr(profile, name)
    ]
    if profile is None or profile.monthly_volume is None:
        gaps.append("Fill in the expected monthly volume.")
    if bank_account_of(tenant_id, merchant_id) is None:
        gaps.append("Give the bank account for payouts.")
    present = {document.kind for document in documents.documents_of(tenant_id, merchant_id)}
    gaps += [f"Upload the document: {DOCUMENT_LABELS[kind]}." for kind in REQUIRED_DOCUMENTS if kind not in present]
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
        raise InvalidInput(f"The application is {status}: there is nothing to submit.")
    gaps = missing(tenant_id, merchant_id)
    if gaps:
        db.session.rollback()
        raise InvalidInput("The application is not complete yet: " + " ".join(gaps))
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
        raise InvalidInput("Choose approve, reject or request changes.", "decision")
    text = (message or "").strip()
    if len(text) > MESSAGE_MAX:
        raise InvalidInput(f"Use at most {MESSAGE_MAX} characters.", "message")
    if decision != "approve" and not text:
        raise InvalidInput("Tell the merchant why, and what to do next.", "message")
    if decision == "approve" and risk_level not in RISK_LEVELS:
        raise InvalidInput("Choose the merchant's risk level.", "risk_level")
    try:
        merchant = locked_merchant(tenant_id, merchant_id)
        if merchant.onboarding_status != "submitted":
            status = merchant.onboarding_status.replace("_", " ")
            raise InvalidInput(f"This application is {status}, not waiting for review: nothing was changed.")
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
