"""Clearing tables: a tenant's settlement settings, merchants' settlement terms, settlements, and
the runs of clearing jobs (their progress and outcome, kept in PostgreSQL, not only in Redis)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

import tenants.models  # noqa: F401  (the merchants table the terms refer to)
from core.db import db
from tenants.isolation import TenantOwned

RUN_KINDS = ("settlement", "payout_batch")
RUN_STATUSES = ("queued", "running", "succeeded", "failed")


class ClearingSettings(TenantOwned, db.Model):
    """A tenant's daily cut-off (local time in the tenant's time zone) and default T+N."""

    __tablename__ = "clearing_settings"

    cutoff: Mapped[time] = mapped_column(sa.Time, default=time(0, 0), server_default=sa.text("'00:00'"))
    delay_days: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    # The account payouts are sent from (the debtor of the bank batch files); the IBAN is encrypted.
    debtor_name: Mapped[str | None] = mapped_column(sa.String(140))
    debtor_iban_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    debtor_bic: Mapped[str | None] = mapped_column(sa.String(11))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (sa.CheckConstraint("delay_days BETWEEN 0 AND 30", name="delay_days"),)


class MerchantSettlementTerms(TenantOwned, db.Model):
    """A merchant's own T+N, instead of the tenant's default."""

    __tablename__ = "merchant_settlement_terms"

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    delay_days: Mapped[int] = mapped_column()

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("delay_days BETWEEN 0 AND 30", name="delay_days"),
    )


class Settlement(TenantOwned, db.Model):
    """One merchant's business day in one currency and mode, moved from pending to available."""

    __tablename__ = "settlements"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    currency: Mapped[str] = mapped_column(sa.String(3))
    livemode: Mapped[bool] = mapped_column()
    business_day: Mapped[date] = mapped_column(sa.Date)
    charges_count: Mapped[int] = mapped_column(default=0)
    charges_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    refunds_count: Mapped[int] = mapped_column(default=0)
    refunds_amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # negative or zero
    fees: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    net: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    run_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("tenant_id", "merchant_id", "currency", "livemode", "business_day"),
        sa.CheckConstraint("net = charges_amount + refunds_amount - fees", name="net"),
        sa.Index("ix_settlements_tenant_id_merchant_id_business_day", "tenant_id", "merchant_id", "business_day"),
        sa.Index("ix_settlements_tenant_id_business_day", "tenant_id", "business_day"),
    )


class ClearingRun(TenantOwned, db.Model):
    """One run of a clearing job for a tenant: what it was asked, how far it got, what it did."""

    __tablename__ = "clearing_runs"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(10), default="queued")
    trigger: Mapped[str] = mapped_column(sa.String(20), default="schedule")  # schedule | manual
    requested_by: Mapped[str | None] = mapped_column(sa.String(320))
    total: Mapped[int] = mapped_column(default=0)
    processed: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=sa.text("'{}'"))
    error: Mapped[str | None] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint(f"kind IN {RUN_KINDS!r}", name="kind"),
        sa.CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        sa.Index("ix_clearing_runs_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class MerchantBankAccount(TenantOwned, db.Model):
    """Where a merchant's payouts go. The account identifier (an IBAN, or a domestic account
    number with a bank code) is stored encrypted; pages show only its last four characters."""

    __tablename__ = "merchant_bank_accounts"

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    holder_name: Mapped[str] = mapped_column(sa.String(140))
    kind: Mapped[str] = mapped_column(sa.String(10))  # iban | number
    account_encrypted: Mapped[str] = mapped_column(sa.Text)
    account_last4: Mapped[str] = mapped_column(sa.String(4))
    bank_code: Mapped[str | None] = mapped_column(sa.String(34))  # BIC for an IBAN, else the domestic code
    bank_name: Mapped[str] = mapped_column(sa.String(140), default="", server_default="")
    country: Mapped[str] = mapped_column(sa.String(2))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('iban', 'number')", name="kind"),
    )


class PayoutBatch(TenantOwned, db.Model):
    """Requested payouts of one currency and mode, sent to the bank together in one file."""

    __tablename__ = "payout_batches"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    reference: Mapped[str] = mapped_column(sa.String(35))  # the file's message id, e.g. PB20261130-3f9a1c
    currency: Mapped[str] = mapped_column(sa.String(3))
    livemode: Mapped[bool] = mapped_column()
    count: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    paid_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    run_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    created_by: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "reference"),
        sa.Index("ix_payout_batches_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class PayoutResultFile(TenantOwned, db.Model):
    """A bank result file as imported: its fingerprint makes a second import of it a no-op."""

    __tablename__ = "payout_result_files"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    filename: Mapped[str] = mapped_column(sa.String(255))
    lines: Mapped[int] = mapped_column(default=0)
    paid: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    uploaded_by: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (sa.UniqueConstraint("tenant_id", "fingerprint"),)
