"""Risk tables: a tenant's rules and the alerts they raised."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

import payments.models  # noqa: F401  (the payment_intents table alerts refer to)
import tenants.models  # noqa: F401  (the merchants table)
from core.db import db
from tenants.isolation import TenantOwned

KINDS = ("velocity", "large_amount", "structuring", "duplicate", "refund_share")
ACTIONS = ("flag", "hold", "block")
# Whose payments a rule counts: the payer (by e-mail), the card (by its payment method), the merchant.
SUBJECTS = ("payer", "card", "merchant")


class RiskRule(TenantOwned, db.Model):
    """One rule of a tenant, applied to payments in its currency. Amounts are minor units, windows
    minutes; which fields a kind uses is `risk.rules.FIELDS`, the others are NULL."""

    __tablename__ = "risk_rules"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(20))
    action: Mapped[str] = mapped_column(sa.String(10))
    currency: Mapped[str] = mapped_column(sa.String(3))
    enabled: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    subject: Mapped[str | None] = mapped_column(sa.String(10))
    window_minutes: Mapped[int | None] = mapped_column(sa.Integer)
    count_limit: Mapped[int | None] = mapped_column(sa.Integer)
    amount_limit: Mapped[int | None] = mapped_column(sa.BigInteger)
    percent: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        # What screening reads for each payment: the tenant's enabled rules of its currency.
        sa.Index("ix_risk_rules_tenant_id_currency", "tenant_id", "currency", postgresql_where=sa.text("enabled")),
        sa.CheckConstraint(f"kind IN {KINDS}", name="kind"),
        sa.CheckConstraint(f"action IN {ACTIONS}", name="action"),
        sa.CheckConstraint(f"subject IN {SUBJECTS}", name="subject"),
        sa.CheckConstraint("window_minutes > 0 AND count_limit > 0 AND amount_limit > 0", name="positive"),
        sa.CheckConstraint("percent BETWEEN 1 AND 100", name="percent"),
    )


class RiskAlert(TenantOwned, db.Model):
    """A rule that fired for a payment: what it did and why, with the figures. The rule's name,
    kind and action are copied, so an alert stays readable after its rule changes or goes."""

    __tablename__ = "risk_alerts"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    rule_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    rule_name: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(20))
    action: Mapped[str] = mapped_column(sa.String(10))
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    payment_intent_id: Mapped[str | None] = mapped_column(sa.String(40))
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    reason: Mapped[str] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"], ["payment_intents.tenant_id", "payment_intents.id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_risk_alerts_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # A refund-share rule alerts once a day per merchant: the last alert of a rule for a merchant.
        sa.Index(
            "ix_risk_alerts_tenant_id_rule_id_merchant_id_created_at",
            "tenant_id",
            "rule_id",
            "merchant_id",
            "created_at",
        ),
        sa.Index("ix_risk_alerts_tenant_id_payment_intent_id", "tenant_id", "payment_intent_id"),
        sa.CheckConstraint(f"kind IN {KINDS}", name="kind"),
        sa.CheckConstraint(f"action IN {ACTIONS}", name="action"),
    )
