"""A visitor signs up a business on a tenant's portal (use cases).

`start` keeps the sign-up (with the chosen password, hashed) and says what to e-mail: a
verification link for a new address, or, for an address that already has an account on this
tenant, a note that it does (the page shows the same neutral answer either way, so nobody can
probe which addresses have accounts). `verify` turns a sign-up into a draft merchant and its
owner, once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db import db
from core.i18n import gettext
from onboarding.models import MerchantSignup
from tenants import audit, passwords, tokens
from tenants.errors import InvalidInput
from tenants.models import Merchant, User
from tenants.provisioning import normalise_email

NAME_MAX = 200
# At most this many e-mails to one address per hour, so the form cannot be used to flood a mailbox.
MAILS_PER_HOUR = 3


@dataclass(frozen=True)
class Started:
    """What to e-mail: `signup` (send the verification link), `existing` (tell the account
    holder), or nothing (too many sign-ups for this address in the last hour)."""

    signup: MerchantSignup | None = None
    existing: User | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def start(tenant_id: uuid.UUID, business_name: str, email: str, password: str, ip: str | None) -> Started:
    """Validate and keep a sign-up. Raises InvalidInput naming the field. Commits."""
    name = (business_name or "").strip()
    if not name:
        raise InvalidInput(gettext("Give your business's name."), "business_name")
    if len(name) > NAME_MAX:
        raise InvalidInput(gettext("Use at most %(limit)s characters.", limit=NAME_MAX), "business_name")
    address = normalise_email(email or "")
    problem = passwords.password_problem(password or "")
    if problem:
        raise InvalidInput(problem, "password")
    recent = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(MerchantSignup)
        .where(
            MerchantSignup.tenant_id == tenant_id,
            MerchantSignup.email == address,
            MerchantSignup.created_at > _now() - timedelta(hours=1),
        )
    )
    if recent >= MAILS_PER_HOUR:
        return Started()
    existing = db.session.execute(
        sa.select(User).where(User.tenant_id == tenant_id, User.email == address)
    ).scalar_one_or_none()
    # Kept in both cases: the row counts towards the hourly limit, and its password is never used
    # for an existing account (verifying it refuses, see `verify`).
    signup = MerchantSignup(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        email=address,
        business_name=name,
        password_hash=passwords.hash_password(password),
        ip=ip,
    )
    db.session.add(signup)
    db.session.commit()
    if existing is not None:
        return Started(existing=existing if existing.is_active else None)
    return Started(signup=signup)


def pending(tenant_id: uuid.UUID, secret: str, token: str, max_age: int) -> MerchantSignup:
    """The unverified sign-up a verification link names, or TokenError (broken, expired, used,
    another tenant's)."""
    ref, signed = tokens.account_id(secret, "signup", token, max_age)
    kind, _, raw = ref.partition(":")
    signup = None
    if kind == "s":
        try:
            signup_id = uuid.UUID(raw)
        except ValueError:
            signup_id = None
        if signup_id is not None:
            signup = db.session.execute(
                sa.select(MerchantSignup).where(MerchantSignup.tenant_id == tenant_id, MerchantSignup.id == signup_id)
            ).scalar_one_or_none()
    tokens.check_unused(signup, signed)
    return signup


def verify(signup: MerchantSignup, ip: str | None) -> User:
    """Create the draft merchant and its owner (who signs in with the sign-up's password). Returns
    the owner. Raises TokenError when the sign-up was verified meanwhile, InvalidInput when the
    address got an account meanwhile. Commits."""
    row = db.session.get(MerchantSignup, (signup.tenant_id, signup.id), with_for_update=True, populate_existing=True)
    if row is None or row.verified_at is not None:
        db.session.rollback()
        raise tokens.TokenError(gettext("This link has already been used or is no longer valid."))
    tenant_id = row.tenant_id
    taken = db.session.execute(sa.select(User.id).where(User.tenant_id == tenant_id, User.email == row.email)).first()
    now = _now()
    row.verified_at = now
    if taken:
        db.session.commit()  # the link is used up either way
        raise InvalidInput(gettext("This e-mail address already has an account here: sign in, or reset your password."))
    merchant = Merchant(tenant_id=tenant_id, id=uuid.uuid4(), name=row.business_name, onboarding_status="draft")
    db.session.add(merchant)
    db.session.flush()
    owner = User(
        tenant_id=tenant_id,
        email=row.email,
        role="owner",
        merchant_id=merchant.id,
        password_hash=row.password_hash,
        password_changed_at=now,
    )
    db.session.add(owner)
    db.session.flush()
    row.merchant_id = merchant.id
    actor = audit.Actor(kind="user", id=owner.id, email=owner.email, ip=ip)
    audit.record(
        tenant_id,
        actor,
        "merchant.signed_up",
        "merchant",
        merchant.id,
        audit.created(name=merchant.name, owner_email=owner.email, onboarding_status="draft"),
    )
    db.session.commit()
    return owner
