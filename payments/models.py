"""Channel accounts and routing rules: a tenant's payment channels as data, effective at once."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db import db
from tenants.isolation import TenantOwned

CHANNEL_TYPES = ("sandbox", "stripe")
CHANNEL_STATUSES = ("active", "paused")
MODES = ("test", "live")
RULE_ACTIONS = ("force", "exclude")


class ChannelAccount(TenantOwned, db.Model):
    """One account at a payment channel (a Stripe account, a sandbox), in one currency.

    Credentials are stored encrypted (`core.crypto`); `credentials_hint` is the masked form
    shown in the console. Limits and costs are in the account's currency's minor unit;
    `costs` maps a product code to {"percent": "<decimal>", "fixed": <int>}.
    """

    __tablename__ = "channel_accounts"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(120))
    type: Mapped[str] = mapped_column(sa.String(20))
    mode: Mapped[str] = mapped_column(sa.String(4), default="test")
    status: Mapped[str] = mapped_column(sa.String(10), default="active")
    base_url: Mapped[str | None] = mapped_column(sa.String(300))
    credentials_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    credentials_hint: Mapped[str] = mapped_column(sa.String(200), default="")
    currency: Mapped[str] = mapped_column(sa.String(3))
    products: Mapped[list[str]] = mapped_column(ARRAY(sa.String(30)), default=list)
    min_amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    max_amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    daily_cap: Mapped[int | None] = mapped_column(sa.BigInteger)
    costs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    priority: Mapped[int] = mapped_column(default=100)
    required_elements: Mapped[list[str]] = mapped_column(ARRAY(sa.String(40)), default=list)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        sa.CheckConstraint("type IN ('sandbox', 'stripe')", name="type"),
        sa.CheckConstraint("mode IN ('test', 'live')", name="mode"),
        sa.CheckConstraint("status IN ('active', 'paused')", name="status"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        sa.CheckConstraint("min_amount IS NULL OR min_amount >= 0", name="min_amount"),
        sa.CheckConstraint("max_amount IS NULL OR max_amount > 0", name="max_amount"),
        sa.CheckConstraint("daily_cap IS NULL OR daily_cap > 0", name="daily_cap"),
        sa.UniqueConstraint("tenant_id", "name"),
        sa.Index("ix_channel_accounts_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class RoutingRule(TenantOwned, db.Model):
    """Force or exclude a channel account for a merchant (for one product, or all)."""

    __tablename__ = "routing_rules"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    channel_account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    action: Mapped[str] = mapped_column(sa.String(10))
    product: Mapped[str | None] = mapped_column(sa.String(30))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("action IN ('force', 'exclude')", name="action"),
        sa.UniqueConstraint(
            "tenant_id",
            "merchant_id",
            "channel_account_id",
            "product",
            name="uq_routing_rules_rule",
            postgresql_nulls_not_distinct=True,
        ),
        sa.Index("ix_routing_rules_tenant_id_merchant_id", "tenant_id", "merchant_id"),
    )


class ChannelDailyUsage(TenantOwned, db.Model):
    """What a channel account has taken on one day (in its currency), for the daily cap.

    Written by the payment core in the same transaction as each accepted charge.
    """

    __tablename__ = "channel_daily_usage"

    channel_account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    amount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    count: Mapped[int] = mapped_column(default=0)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            ondelete="CASCADE",
        ),
    )
