"""Billing tables: fee schedules and their versions, which schedule a merchant is on, the
platform's fee per tenant, each merchant's monthly volume (for volume tiers), and merchants'
charge items, coupons and coupon redemptions.

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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
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


# --- charge items and coupons ----------------------------------------------------------------

COUPON_KINDS = ("percent", "fixed")
REDEMPTION_STATUSES = ("reserved", "released")


class ChargeItem(TenantOwned, db.Model):
    """Something a merchant sells (收费项目): a name, a unit and a price per unit. An order copies
    the price into its lines, so a later price change never rewrites an order."""

    __tablename__ = "charge_items"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    name: Mapped[str] = mapped_column(sa.String(200))
    unit: Mapped[str] = mapped_column(sa.String(40), default="piece")
    unit_amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    tax_inclusive: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # The payment method types (products) it may be paid with; empty: whatever the channels take.
    payment_method_types: Mapped[list[str]] = mapped_column(
        ARRAY(sa.String(30)), default=list, server_default=sa.text("'{}'")
    )
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("unit_amount >= 0", name="unit_amount"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        sa.Index("ix_charge_items_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )


class Coupon(TenantOwned, db.Model):
    """A discount code of a merchant: a percentage (basis points) or a fixed amount, with a minimum
    order amount, an expiry and limits. `times_redeemed` counts the redemptions held now (reserved
    for an open or paid payment), kept under the coupon's row lock so limits hold under concurrency."""

    __tablename__ = "coupons"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    code: Mapped[str] = mapped_column(sa.String(40))
    kind: Mapped[str] = mapped_column(sa.String(10))
    percent_off_bp: Mapped[int | None] = mapped_column()
    amount_off: Mapped[int | None] = mapped_column(sa.BigInteger)
    # The currency of `amount_off` and `min_amount`; none: a percentage for orders in any currency.
    currency: Mapped[str | None] = mapped_column(sa.String(3))
    min_amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    max_redemptions: Mapped[int | None] = mapped_column()
    max_per_payer: Mapped[int | None] = mapped_column()
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    times_redeemed: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('percent', 'fixed')", name="kind"),
        sa.CheckConstraint(
            "(kind = 'percent' AND percent_off_bp BETWEEN 1 AND 10000 AND amount_off IS NULL)"
            " OR (kind = 'fixed' AND amount_off > 0 AND percent_off_bp IS NULL AND currency IS NOT NULL)",
            name="terms",
        ),
        sa.CheckConstraint("min_amount IS NULL OR (min_amount >= 0 AND currency IS NOT NULL)", name="min_amount"),
        sa.CheckConstraint("max_redemptions IS NULL OR max_redemptions > 0", name="max_redemptions"),
        sa.CheckConstraint("max_per_payer IS NULL OR max_per_payer > 0", name="max_per_payer"),
        sa.CheckConstraint("times_redeemed >= 0", name="times_redeemed"),
        sa.Index(
            "uq_coupons_tenant_id_merchant_id_code", "tenant_id", "merchant_id", sa.text("lower(code)"), unique=True
        ),
        sa.Index("ix_coupons_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )


class CouponRedemption(TenantOwned, db.Model):
    """A coupon used by one payment: reserved when the order and its PaymentIntent are created,
    released when that payment is canceled (the coupon may then be used again)."""

    __tablename__ = "coupon_redemptions"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    coupon_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    payment_intent_id: Mapped[str] = mapped_column(sa.String(40))
    payer_email: Mapped[str | None] = mapped_column(sa.String(254))
    discount: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(10), default="reserved")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    released_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(["tenant_id", "coupon_id"], ["coupons.tenant_id", "coupons.id"], ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"],
            ["payment_intents.tenant_id", "payment_intents.id"],
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("status IN ('reserved', 'released')", name="status"),
        sa.CheckConstraint("payer_email = lower(payer_email)", name="payer_email_lower"),
        sa.CheckConstraint("discount >= 0", name="discount"),
        sa.UniqueConstraint("tenant_id", "payment_intent_id"),
        sa.Index("ix_coupon_redemptions_tenant_id_coupon_id_payer_email", "tenant_id", "coupon_id", "payer_email"),
    )
