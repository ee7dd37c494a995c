"""Onboarding tables: pending sign-ups, merchants' business profiles and their KYC documents."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

import tenants.models  # noqa: F401  (the merchants table the rows refer to)
from core.db import db
from tenants.isolation import TenantOwned

DOCUMENT_KINDS = ("business_licence", "representative_id", "bank_proof", "other")


class MerchantSignup(TenantOwned, db.Model):
    """A visitor's sign-up on a tenant's portal, waiting for its e-mail to be verified.

    Verifying creates the merchant (a draft) and its owner with the password chosen here. The
    verification link is a `tenants.tokens` link of purpose `signup`: it signs this row's id and
    its state, which verifying changes, so the link works once.
    """

    __tablename__ = "merchant_signups"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(sa.String(254))
    business_name: Mapped[str] = mapped_column(sa.String(200))
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    ip: Mapped[str | None] = mapped_column(sa.String(45))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    verified_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)

    __table_args__ = (
        sa.CheckConstraint("email = lower(email)", name="email_lower"),
        sa.Index("ix_merchant_signups_tenant_id_email_created_at", "tenant_id", "email", "created_at"),
    )

    # What `tenants.tokens` signs: the id and a fingerprint of the state.
    def get_id(self) -> str:
        return f"s:{self.id}"

    @property
    def password_changed_at(self) -> datetime | None:
        return self.verified_at

    @property
    def is_active(self) -> bool:
        return self.verified_at is None


class MerchantProfile(TenantOwned, db.Model):
    """What a merchant tells about its business for the KYC review. The payout bank account is
    `clearing.models.MerchantBankAccount` (stored encrypted), set from the same form."""

    __tablename__ = "merchant_profiles"

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    legal_name: Mapped[str] = mapped_column(sa.String(200), default="", server_default="")
    registration_number: Mapped[str] = mapped_column(sa.String(64), default="", server_default="")
    legal_representative: Mapped[str] = mapped_column(sa.String(200), default="", server_default="")
    address: Mapped[str] = mapped_column(sa.String(500), default="", server_default="")
    country: Mapped[str] = mapped_column(sa.String(2), default="", server_default="")
    # Expected monthly volume in minor units of `volume_currency`.
    monthly_volume: Mapped[int | None] = mapped_column(sa.BigInteger)
    volume_currency: Mapped[str | None] = mapped_column(sa.String(3))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("monthly_volume IS NULL OR monthly_volume > 0", name="monthly_volume"),
        sa.CheckConstraint("(monthly_volume IS NULL) = (volume_currency IS NULL)", name="volume_currency"),
    )

    FIELDS = ("legal_name", "registration_number", "legal_representative", "address", "country")


class KycDocument(TenantOwned, db.Model):
    """An uploaded KYC document. The file lives under the upload folder by `storage_name` (random,
    chosen by us); `original_name` is only shown, never used as a path."""

    __tablename__ = "kyc_documents"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    kind: Mapped[str] = mapped_column(sa.String(30))
    storage_name: Mapped[str] = mapped_column(sa.String(40))
    original_name: Mapped[str] = mapped_column(sa.String(200))
    content_type: Mapped[str] = mapped_column(sa.String(40))
    size: Mapped[int] = mapped_column(sa.Integer)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('business_licence', 'representative_id', 'bank_proof', 'other')", name="kind"),
        sa.CheckConstraint("content_type IN ('application/pdf', 'image/png', 'image/jpeg')", name="content_type"),
        sa.CheckConstraint("storage_name ~ '^[0-9a-f]{32}\\.(pdf|png|jpg)$'", name="storage_name"),
        sa.Index("ix_kyc_documents_tenant_id_merchant_id_created_at", "tenant_id", "merchant_id", "created_at"),
    )

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")
