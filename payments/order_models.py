"""Orders (the priced lines of one PaymentIntent) and payment links, as tables.

An order is written in the transaction that creates its PaymentIntent and copies every price it
uses, so what the payer was shown stays what the payment charged, whatever later happens to the
charge items or coupons it came from.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

import billing.models  # noqa: F401  (charge items and coupons the orders refer to)
import payments.models  # noqa: F401  (the payment intents the orders belong to)
from core.db import db
from payments.models import RETURN_URL_MAX
from tenants.isolation import TenantOwned

LINE_KINDS = ("item", "discount")
LINK_KINDS = ("amount", "items")


class Order(TenantOwned, db.Model):
    """What one PaymentIntent is for: its subtotal, discount and total (= the intent's amount),
    the coupon used and the payment link it came from, if any."""

    __tablename__ = "orders"

    payment_intent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    currency: Mapped[str] = mapped_column(sa.String(3))
    subtotal: Mapped[int] = mapped_column(sa.BigInteger)
    discount: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total: Mapped[int] = mapped_column(sa.BigInteger)
    coupon_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    coupon_code: Mapped[str | None] = mapped_column(sa.String(40))
    payment_link_id: Mapped[str | None] = mapped_column(sa.String(40))
    payer_email: Mapped[str | None] = mapped_column(sa.String(254))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"],
            ["payment_intents.tenant_id", "payment_intents.id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_link_id"], ["payment_links.tenant_id", "payment_links.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint("discount >= 0 AND discount <= subtotal", name="discount"),
        sa.CheckConstraint("total = subtotal - discount", name="total"),
        sa.Index("ix_orders_tenant_id_payment_link_id", "tenant_id", "payment_link_id"),
    )


class OrderLine(TenantOwned, db.Model):
    """One line the payer sees: an item (quantity × unit amount) or the coupon's discount (negative)."""

    __tablename__ = "order_lines"

    payment_intent_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(10))
    description: Mapped[str] = mapped_column(sa.String(300))
    charge_item_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    unit: Mapped[str] = mapped_column(sa.String(40), default="", server_default="")
    quantity: Mapped[int] = mapped_column()
    unit_amount: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    tax_inclusive: Mapped[bool] = mapped_column(default=True, server_default=sa.true())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"], ["orders.tenant_id", "orders.payment_intent_id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('item', 'discount')", name="kind"),
        sa.CheckConstraint("quantity > 0", name="quantity"),
        sa.CheckConstraint("amount = unit_amount * quantity", name="amount"),
    )


class PaymentLink(TenantOwned, db.Model):
    """A URL (and its QR code) a merchant hands out: a fixed amount, or charge items with
    quantities; open until it expires, is deactivated or has been paid `max_payments` times."""

    __tablename__ = "payment_links"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(sa.String(200))
    kind: Mapped[str] = mapped_column(sa.String(10))
    amount: Mapped[int | None] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    max_payments: Mapped[int | None] = mapped_column()
    allow_coupons: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    # The merchant's page the payer goes back to after paying (the intents' `return_url`).
    after_payment_url: Mapped[str | None] = mapped_column(sa.String(RETURN_URL_MAX))
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('amount', 'items')", name="kind"),
        sa.CheckConstraint("(kind = 'amount') = (amount IS NOT NULL)", name="amount_kind"),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name="amount"),
        sa.CheckConstraint("max_payments IS NULL OR max_payments > 0", name="max_payments"),
        sa.Index(
            "ix_payment_links_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"
        ),
    )


class PaymentLinkItem(TenantOwned, db.Model):
    """A charge item on a link, with its quantity; `adjustable`: the payer picks within min..max."""

    __tablename__ = "payment_link_items"

    payment_link_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    charge_item_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    quantity: Mapped[int] = mapped_column(default=1)
    adjustable: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    min_quantity: Mapped[int] = mapped_column(default=1, server_default="1")
    max_quantity: Mapped[int] = mapped_column(default=1, server_default="1")

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_link_id"], ["payment_links.tenant_id", "payment_links.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "charge_item_id"], ["charge_items.tenant_id", "charge_items.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint(
            "quantity > 0 AND min_quantity > 0 AND min_quantity <= quantity AND quantity <= max_quantity",
            name="quantity",
        ),
        sa.Index("ix_payment_link_items_tenant_id_charge_item_id", "tenant_id", "charge_item_id"),
    )
