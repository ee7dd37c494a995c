"""Billing tables: fee schedules and their versions, which schedule a merchant is on, the
platform's fee per tenant, and each merchant's monthly volume (for volume tiers).

A version's rules are one immutable JSON document (`FeeScheduleVersion.rules`, a list of rule
objects, see `billing.fees.FeeRule`): a version is never edited, a change is a new version with
its own effective date, and the fee of a payment is fixed when it is captured, so a new version
never changes what was already charged.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

import tenants.models  # noqa: F401  (the merchants table the assignments refer to)
from core.db import db
from tenants.isolation import TenantOwned


class FeeSchedule(TenantOwned, db.Model):
    """What a tenant charges its merchants per payment, by product; a name with versions."""

    __tablename__ = "fee_schedules"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(120))
    # Merchants with no schedule of their own are charged by the tenant's default schedule.
    is_default: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.Index("uq_fee_schedules_tenant_id_name", "tenant_id", sa.text("lower(name)"), unique=True),
        sa.Index(
            "uq_fee_schedules_one_default",
            "tenant_id",
            unique=True,
            postgresql_where=sa.text("is_default"),
        ),
    )


class FeeScheduleVersion(TenantOwned, db.Model):
    """One version of a schedule: its rules, in force from `effective_from` until a later version."""

    __tablename__ = "fee_schedule_versions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    schedule_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    number: Mapped[int] = mapped_column()
    effective_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    note: Mapped[str] = mapped_column(sa.String(500), default="", server_default="")
    created_by: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "schedule_id"], ["fee_schedules.tenant_id", "fee_schedules.id"], ondelete="CASCADE"
        ),
        sa.UniqueConstraint("tenant_id", "schedule_id", "number"),
        sa.CheckConstraint("number > 0", name="number"),
        sa.Index("ix_fee_schedule_versions_in_force", "tenant_id", "schedule_id", "effective_from"),
    )


class MerchantFeeSchedule(TenantOwned, db.Model):
    """The schedule a merchant is on (none: the tenant's default schedule)."""

    __tablename__ = "merchant_fee_schedules"

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    schedule_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    assigned_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "schedule_id"], ["fee_schedules.tenant_id", "fee_schedules.id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_merchant_fee_schedules_tenant_id_schedule_id", "tenant_id", "schedule_id"),
    )


class PlatformFee(TenantOwned, db.Model):
    """The platform's share of a tenant's payments, a percentage of each captured amount; set by
    platform admins, effective from a time (the latest version in force applies)."""

    __tablename__ = "platform_fees"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    percent: Mapped[Decimal] = mapped_column(sa.Numeric(7, 4))
    effective_from: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.CheckConstraint("percent >= 0 AND percent < 100", name="percent"),
        sa.Index("ix_platform_fees_in_force", "tenant_id", "effective_from"),
    )


class MerchantMonthlyVolume(TenantOwned, db.Model):
    """What a merchant captured in one calendar month of the tenant's time zone, per currency and
    mode: the volume that picks a fee tier. Written in the transaction of each capture."""

    __tablename__ = "merchant_monthly_volumes"

    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    month: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    currency: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    livemode: Mapped[bool] = mapped_column(primary_key=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    count: Mapped[int] = mapped_column(default=0)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
    )
