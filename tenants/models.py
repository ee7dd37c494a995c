"""Tenancy models: tenants, their domains and brand, users per scope, merchants, audit.

Every tenant-owned model mixes in `TenantOwned`, so `tenant_id` leads its primary key and
row-level security (created by the migrations) guards it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import db
from tenants.isolation import TenantOwned

TENANT_ROLES = ("admin", "operator", "finance")
MERCHANT_ROLES = ("owner", "staff")
TENANT_STATUSES = ("active", "suspended")
# A merchant's onboarding (KYC review) state; see `onboarding.review` for the transitions.
ONBOARDING_STATUSES = ("draft", "submitted", "changes_requested", "approved", "rejected")
RISK_LEVELS = ("low", "medium", "high")
BRAND_STAGES = ("draft", "published")


def _now() -> sa.sql.elements.ColumnElement:
    return sa.func.now()


class Tenant(db.Model):
    """A reseller. Read by its own requests; created and suspended only in platform scope."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(sa.String(63), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    time_zone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    default_locale: Mapped[str] = mapped_column(sa.String(10), default="en")
    # Two-factor sign-in required of the tenant's staff / of its merchants' users (`tenants.two_factor`).
    require_2fa_staff: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    require_2fa_merchants: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    suspended_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    domains: Mapped[list[TenantDomain]] = relationship(
        back_populates="tenant", order_by="TenantDomain.domain", lazy="selectin"
    )

    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'suspended')", name="status"),
        sa.CheckConstraint("slug ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?$'", name="slug_format"),
        sa.CheckConstraint("default_locale IN ('en', 'zh')", name="default_locale"),
        sa.Index("ix_tenants_created_at_id", "created_at", "id"),
    )

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def primary_domain(self) -> str | None:
        for domain in self.domains:
            if domain.is_primary:
                return domain.domain
        return None


class TenantDomain(TenantOwned, db.Model):
    """A host name that reaches a tenant's portal. Looked up by `tenant_for_host()` in SQL."""

    __tablename__ = "tenant_domains"

    domain: Mapped[str] = mapped_column(sa.String(253), primary_key=True)
    is_primary: Mapped[bool] = mapped_column(default=False)

    tenant: Mapped[Tenant] = relationship(back_populates="domains")

    __table_args__ = (sa.Index("uq_tenant_domains_domain", "domain", unique=True),)


class TenantBrand(TenantOwned, db.Model):
    """The brand a tenant's portal and e-mails wear. `draft` is edited and previewed;
    publishing copies it to `published`, which every page shows."""

    __tablename__ = "tenant_brands"

    stage: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    display_name: Mapped[str] = mapped_column(sa.String(120))
    theme: Mapped[str] = mapped_column(sa.String(40), default="default")
    logo_file: Mapped[str | None] = mapped_column(sa.String(120))
    primary_color: Mapped[str] = mapped_column(sa.String(7))
    accent_color: Mapped[str] = mapped_column(sa.String(7))
    support_email: Mapped[str | None] = mapped_column(sa.String(254))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now(), onupdate=_now())

    __table_args__ = (
        sa.CheckConstraint("stage IN ('draft', 'published')", name="stage"),
        sa.CheckConstraint("primary_color ~ '^#[0-9a-f]{6}$'", name="primary_color"),
        sa.CheckConstraint("accent_color ~ '^#[0-9a-f]{6}$'", name="accent_color"),
    )

    BRAND_FIELDS = (
        "display_name",
        "theme",
        "logo_file",
        "primary_color",
        "accent_color",
        "support_email",
    )

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.BRAND_FIELDS}


class Merchant(TenantOwned, db.Model):
    """A shop under one tenant. `status` is whether it may work at all (active, suspended);
    `onboarding_status` is where its KYC review stands. Live keys and payouts need both
    `active` and `approved` (`can_move_real_money`)."""

    __tablename__ = "merchants"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    # Without a value a new row is a draft (fail closed); the use cases that create merchants say which.
    onboarding_status: Mapped[str] = mapped_column(sa.String(20), server_default="draft")
    # When the onboarding status last changed: a submitted merchant's age in the review queue.
    onboarding_changed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    review_message: Mapped[str | None] = mapped_column(sa.Text)
    risk_level: Mapped[str | None] = mapped_column(sa.String(10))
    # The sites that may show the merchant's hosted checkout in a frame: https origins such as
    # `https://shop.example.com` or `https://*.example.com` (`tenants.frame_domains`); none: no framing.
    frame_domains: Mapped[list[str]] = mapped_column(
        sa.ARRAY(sa.Text), default=list, server_default=sa.text("'{}'::text[]")
    )

    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'suspended')", name="status"),
        sa.CheckConstraint(
            "onboarding_status IN ('draft', 'submitted', 'changes_requested', 'approved', 'rejected')",
            name="onboarding_status",
        ),
        sa.CheckConstraint("risk_level IN ('low', 'medium', 'high')", name="risk_level"),
        sa.Index("ix_merchants_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        sa.Index("ix_merchants_tenant_id_name", "tenant_id", "name"),
        sa.Index(
            "ix_merchants_tenant_id_onboarding_status_changed_at",
            "tenant_id",
            "onboarding_status",
            "onboarding_changed_at",
            "id",
        ),
    )

    @property
    def is_approved(self) -> bool:
        return self.onboarding_status == "approved"

    @property
    def can_move_real_money(self) -> bool:
        """Live API keys and payouts: only an active merchant whose KYC review approved it."""
        return self.status == "active" and self.onboarding_status == "approved"


class PasswordAccount:
    """What tenant users and platform users share: a password, a state, sign-in times."""

    email: Mapped[str] = mapped_column(sa.String(254))
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(sa.String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    last_login_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    password_changed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # The language the person chose ('en', 'zh'); NULL follows the tenant's default.
    locale: Mapped[str | None] = mapped_column(sa.String(10))
    # Two-factor sign-in (`tenants.two_factor`): the TOTP secret, encrypted (`core.crypto`); it is
    # pending until `totp_enabled_at` is set by a confirmed code. `totp_last_step` is the time step
    # of the last accepted code (a code is never accepted twice); recovery codes are argon2 hashes,
    # each removed when used.
    totp_secret: Mapped[str | None] = mapped_column(sa.String(300))
    totp_enabled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)
    recovery_code_hashes: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=sa.text("'[]'::jsonb"))

    # Flask-Login's protocol.
    is_authenticated = True
    is_anonymous = False

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None

    @property
    def has_two_factor(self) -> bool:
        return self.totp_enabled_at is not None


class User(PasswordAccount, TenantOwned, db.Model):
    """A person who signs in on one tenant's host: tenant staff, or a merchant's user.

    The same e-mail under two tenants is two separate users.
    """

    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    role: Mapped[str] = mapped_column(sa.String(20))
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)

    merchant: Mapped[Merchant | None] = relationship(
        primaryjoin="and_(foreign(User.tenant_id) == Merchant.tenant_id, foreign(User.merchant_id) == Merchant.id)",
        viewonly=True,
        lazy="joined",
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("tenant_id", "email"),
        sa.CheckConstraint(
            "(merchant_id IS NULL AND role IN ('admin', 'operator', 'finance'))"
            " OR (merchant_id IS NOT NULL AND role IN ('owner', 'staff'))",
            name="role_scope",
        ),
        sa.CheckConstraint("email = lower(email)", name="email_lower"),
        sa.CheckConstraint("locale IN ('en', 'zh')", name="locale"),
        sa.Index("ix_users_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        sa.Index("ix_users_tenant_id_merchant_id", "tenant_id", "merchant_id"),
    )

    scope = "tenant"

    @property
    def is_merchant_user(self) -> bool:
        return self.merchant_id is not None

    def get_id(self) -> str:
        return f"u:{self.id}"


class PlatformUser(PasswordAccount, db.Model):
    """An operator of the whole platform. Visible only in platform scope."""

    __tablename__ = "platform_users"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    role: Mapped[str] = mapped_column(sa.String(20), default="admin")

    __table_args__ = (
        sa.UniqueConstraint("email"),
        sa.CheckConstraint("role IN ('admin')", name="role"),
        sa.CheckConstraint("email = lower(email)", name="email_lower"),
        sa.CheckConstraint("locale IN ('en', 'zh')", name="locale"),
    )

    scope = "platform"

    def get_id(self) -> str:
        return f"p:{self.id}"


class LoginAttemptColumns:
    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(sa.String(254))
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    outcome: Mapped[str] = mapped_column(sa.String(20))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())


class LoginAttempt(LoginAttemptColumns, TenantOwned, db.Model):
    """Every sign-in attempt on a tenant's host, with its outcome; lockout counts these."""

    __tablename__ = "login_attempts"

    __table_args__ = (sa.Index("ix_login_attempts_tenant_id_email_created_at", "tenant_id", "email", "created_at"),)


class PlatformLoginAttempt(LoginAttemptColumns, db.Model):
    """Every sign-in attempt on the platform host."""

    __tablename__ = "platform_login_attempts"

    __table_args__ = (sa.Index("ix_platform_login_attempts_email_created_at", "email", "created_at"),)


class AuditEvent(TenantOwned, db.Model):
    """Who did what to which object of a tenant, with the changed fields before and after.

    Platform actions on a tenant (provisioning, suspension) are recorded under that tenant.
    Each tenant's events form a hash chain (`tenants.audit`): `seq` counts from 1 without gaps,
    `prev_hash` is the previous event's `hash`, and `hash` covers this event's fields and
    `prev_hash`, so an edited or deleted event is found by `flask audit verify`.
    """

    __tablename__ = "audit_events"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    actor_kind: Mapped[str] = mapped_column(sa.String(20))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    actor_email: Mapped[str | None] = mapped_column(sa.String(254))
    action: Mapped[str] = mapped_column(sa.String(80))
    object_type: Mapped[str] = mapped_column(sa.String(40))
    object_id: Mapped[str] = mapped_column(sa.String(80))
    changes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=_now())
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (
        sa.CheckConstraint("actor_kind IN ('platform', 'user', 'system', 'api_key')", name="actor_kind"),
        sa.UniqueConstraint("tenant_id", "seq"),
        sa.Index("ix_audit_events_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # The audit log filtered to one object's history.
        sa.Index("ix_audit_events_tenant_id_object_type_object_id", "tenant_id", "object_type", "object_id"),
    )


class AuditChainHead(TenantOwned, db.Model):
    """The end of a tenant's audit chain: the last event's `seq` and `hash`. Appending locks this
    row (so two transactions cannot both extend the chain from the same event), and `flask audit
    verify` compares it with the last event it finds (so deleting the newest events shows too)."""

    __tablename__ = "audit_chain_heads"

    seq: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))
