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


RETURN_URL_MAX = 2000  # the longest return_url a PaymentIntent keeps


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
    # Non-secret adapter settings (timeouts, a sandbox's simulated latency, test instruments).
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
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


# --- payments ------------------------------------------------------------------------------

INTENT_STATUSES = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
    "requires_capture",
    "canceled",
    "succeeded",
)
ATTEMPT_STATUSES = ("started", "succeeded", "requires_capture", "declined", "unavailable", "unknown", "failed")
REFUND_STATUSES = ("pending", "succeeded", "failed", "canceled")


class PaymentIntent(TenantOwned, db.Model):
    """A merchant's order to collect money, as Stripe's PaymentIntent (ids `pi_...`).

    Amounts are minor units; `amount_refunded` includes refunds in flight, so concurrent refunds
    can never together exceed what was received.
    """

    __tablename__ = "payment_intents"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(30))
    capture_method: Mapped[str] = mapped_column(sa.String(10), default="automatic")
    payment_method: Mapped[str | None] = mapped_column(sa.String(120))
    payment_method_types: Mapped[list[str]] = mapped_column(ARRAY(sa.String(30)), default=list)
    product: Mapped[str | None] = mapped_column(sa.String(30))
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    channel_reference: Mapped[str | None] = mapped_column(sa.String(120))
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    amount_capturable: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_received: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    # What the merchant sent about the payer, as sent (`receipt_email`, Stripe's `billing_details`
    # and `shipping`, the platform's `payer` object); the payer elements routing checks are read
    # from it (`payments.payer_details.payer_elements`). Never card data: a card is only a token.
    payer_details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=sa.text("'{}'"))
    # True when the merchant chose `payment_method_types`; else they follow the amount and channels.
    payment_method_types_chosen: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    last_payment_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    cancellation_reason: Mapped[str | None] = mapped_column(sa.String(40))
    client_secret: Mapped[str] = mapped_column(sa.String(80))
    # Where the hosted checkout sends the payer back after paying (the merchant's page).
    return_url: Mapped[str | None] = mapped_column(sa.String(RETURN_URL_MAX))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )
    canceled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # The merchant's terminal that created it with its device key (`payments.terminals`), if one did.
    terminal_id: Mapped[str | None] = mapped_column(sa.String(40))
    # Risk screening (`risk.screening`, at each confirmation): the payer's e-mail as rules compare it
    # (lower case), and the review state: "held" (its money stays out of settlement), "released",
    # "refunded"; `risk_released_at`: when the review let its money go to settlement.
    risk_payer: Mapped[str | None] = mapped_column(sa.String(254))
    risk_review: Mapped[str | None] = mapped_column(sa.String(10))
    risk_released_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "terminal_id"], ["terminals.tenant_id", "terminals.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint(f"status IN {INTENT_STATUSES}", name="status"),
        sa.CheckConstraint("capture_method IN ('automatic', 'manual')", name="capture_method"),
        sa.CheckConstraint("amount_refunded >= 0 AND amount_refunded <= amount_received", name="refund_bound"),
        sa.CheckConstraint("amount_received <= amount", name="received_bound"),
        sa.Index(
            "ix_payment_intents_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"
        ),
        # The merchant's payments list filtered by terminal, newest first; partial: most payments have none.
        sa.Index(
            "ix_payment_intents_tenant_id_terminal_id_created_at_id",
            "tenant_id",
            "terminal_id",
            "created_at",
            "id",
            postgresql_where=sa.text("terminal_id IS NOT NULL"),
        ),
        # The tenant's reports and its payments list across merchants (`clearing.reports`, `clearing.listings`).
        sa.Index("ix_payment_intents_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        # Risk rules look back over a payer's and a card's recent payments; the review queue lists held ones.
        sa.Index(
            "ix_payment_intents_risk_payer",
            "tenant_id",
            "risk_payer",
            "created_at",
            postgresql_where=sa.text("risk_payer IS NOT NULL"),
        ),
        sa.Index(
            "ix_payment_intents_risk_card",
            "tenant_id",
            "payment_method",
            "created_at",
            postgresql_where=sa.text("payment_method IS NOT NULL"),
        ),
        sa.Index(
            "ix_payment_intents_risk_held",
            "tenant_id",
            "created_at",
            "id",
            postgresql_where=sa.text("risk_review = 'held'"),
        ),
        sa.CheckConstraint("risk_review IN ('held', 'released', 'refunded')", name="risk_review"),
    )


class PaymentAttempt(TenantOwned, db.Model):
    """One call to a channel for a payment (charge, capture, cancel, query), with its outcome.

    The attempt is written before the call and finished after it; an attempt left `unknown`
    (timeout) is resolved by querying the channel with its idempotency key, never by charging again.
    """

    __tablename__ = "payment_attempts"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    payment_intent_id: Mapped[str] = mapped_column(sa.String(40))
    channel_account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    kind: Mapped[str] = mapped_column(sa.String(10))
    status: Mapped[str] = mapped_column(sa.String(20), default="started")
    idempotency_key: Mapped[str] = mapped_column(sa.String(120))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    request: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    error: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"], ["payment_intents.tenant_id", "payment_intents.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('charge', 'capture', 'cancel')", name="kind"),
        sa.CheckConstraint(f"status IN {ATTEMPT_STATUSES}", name="status"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.Index("ix_payment_attempts_tenant_id_payment_intent_id", "tenant_id", "payment_intent_id"),
    )


class Refund(TenantOwned, db.Model):
    """Money given back for a PaymentIntent, in full or in part (ids `re_...`)."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(sa.String(40))
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(10), default="pending")
    reason: Mapped[str | None] = mapped_column(sa.String(40))
    failure_reason: Mapped[str | None] = mapped_column(sa.String(200))
    channel_reference: Mapped[str | None] = mapped_column(sa.String(120))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "payment_intent_id"], ["payment_intents.tenant_id", "payment_intents.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint(f"status IN {REFUND_STATUSES}", name="status"),
        sa.Index("ix_refunds_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
        sa.Index("ix_refunds_tenant_id_payment_intent_id", "tenant_id", "payment_intent_id"),
    )


class Event(TenantOwned, db.Model):
    """Something that happened to a merchant's object (ids `evt_...`): the API's Events and the
    outbox from which webhooks are delivered, written in the same transaction as the change."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    type: Mapped[str] = mapped_column(sa.String(60))
    object_id: Mapped[str] = mapped_column(sa.String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    # When `payments.webhooks.dispatch` turned it into deliveries (None: not yet).
    dispatched_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_events_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
        sa.Index("ix_events_tenant_id_object_id", "tenant_id", "object_id"),
        sa.Index(
            "ix_events_undispatched", "tenant_id", "created_at", postgresql_where=sa.text("dispatched_at IS NULL")
        ),
    )


class IdempotencyKey(TenantOwned, db.Model):
    """A merchant API request made with an `Idempotency-Key`: the first response is kept and
    replayed for the same key and body; another body with the same key is an error.

    While `in_progress`, `locked_at` is when the running request claimed the key (its lease; NULL:
    released) and `object_id` the object it created or acted on, written in the transaction that
    first wrote that object (the recovery point should the request's process die).
    """

    __tablename__ = "idempotency_keys"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column()
    key: Mapped[str] = mapped_column(sa.String(255))
    request_fingerprint: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(12), default="in_progress")
    response_status: Mapped[int | None] = mapped_column()
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    locked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    object_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.CheckConstraint("status IN ('in_progress', 'done')", name="status"),
        sa.UniqueConstraint("tenant_id", "merchant_id", "livemode", "key", name="uq_idempotency_keys_key"),
    )


class ChannelNotification(TenantOwned, db.Model):
    """A verified notification from a channel, once per (channel account, the channel's event id):
    a repeat delivery is recognised and answered without being applied again."""

    __tablename__ = "channel_notifications"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    channel_account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    event_id: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(100))
    outcome: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str | None] = mapped_column(sa.String(300))
    payment_intent_id: Mapped[str | None] = mapped_column(sa.String(40))
    received_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "channel_account_id"],
            ["channel_accounts.tenant_id", "channel_accounts.id"],
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("outcome IN ('applied', 'ignored')", name="outcome"),
        sa.UniqueConstraint("tenant_id", "channel_account_id", "event_id", name="uq_channel_notifications_event"),
    )


# --- wallet money movements -------------------------------------------------------------------

BALANCE_TRANSACTION_TYPES = ("charge", "refund", "topup", "transfer", "payout", "payout_cancel", "payout_failure")
BALANCE_TRANSACTION_STATUSES = ("pending", "available")
TOPUP_STATUSES = ("pending", "succeeded", "failed", "canceled")
# Where a top-up's current channel call stands (as a payment attempt's status): `started` before the
# call, `unknown` after a timeout or while the channel is still processing (a job asks it), then final.
TOPUP_CHARGE_STATUSES = ("started", "unknown", "succeeded", "declined", "unavailable", "failed")
PAYOUT_STATUSES = ("pending", "in_transit", "paid", "failed", "canceled")


class BalanceTransaction(TenantOwned, db.Model):
    """One movement of a merchant's balance as the merchant sees it (ids `txn_...`), written in the
    same transaction as the ledger entry that moves the money: a captured payment ("charge"), a
    succeeded refund ("refund", negative), a top-up, a transfer out (negative) or in, a payout
    (negative) and a canceled payout ("payout_cancel"). `net = amount - fee`; `source` is the id of
    the object that moved the money. `status` is "pending" while the money sits in the merchant's
    pending balance (charges and refunds until clearing releases them), else "available".
    """

    __tablename__ = "balance_transactions"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    fee: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    fee_details: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    net: Mapped[int] = mapped_column(sa.BigInteger)
    type: Mapped[str] = mapped_column(sa.String(20))
    source: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(10))
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    available_on: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # The settlement (`clearing`) that released a charge or refund from pending to available.
    settlement_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_balance_transactions_tenant_id_settlement_id", "tenant_id", "settlement_id"),
        # What settlement looks for: the pending movements, by tenant and time.
        sa.Index(
            "ix_balance_transactions_pending",
            "tenant_id",
            "created_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.CheckConstraint("amount <> 0", name="amount"),
        sa.CheckConstraint("net = amount - fee", name="net"),
        sa.CheckConstraint(f"type IN {BALANCE_TRANSACTION_TYPES}", name="type"),
        sa.CheckConstraint(f"status IN {BALANCE_TRANSACTION_STATUSES}", name="status"),
        sa.Index(
            "ix_balance_transactions_tenant_id_merchant_id_created_at_id",
            "tenant_id",
            "merchant_id",
            "created_at",
            "id",
        ),
        sa.Index("ix_balance_transactions_tenant_id_source", "tenant_id", "source"),
        # Reports: captures and refunds of a tenant by time (`clearing.reports`).
        sa.Index("ix_balance_transactions_tenant_id_type_created_at", "tenant_id", "type", "created_at"),
    )


class Topup(TenantOwned, db.Model):
    """Money a merchant adds to its platform wallet (ids `tu_...`).

    A top-up with a `source` (a card token, or the product code `bank_transfer`) is charged through
    one of the tenant's channel accounts, as a payment is: the channel columns hold the current
    call (account, the idempotency key the channel received, where the call stands), written
    before the call; `charge_log` keeps one line per channel tried. A test top-up without a source
    touches no channel and has none of them.
    """

    __tablename__ = "topups"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(10))
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    # What pays, as the merchant sent it (a token, never card data), and the product it means.
    source: Mapped[str | None] = mapped_column(sa.String(120))
    product: Mapped[str | None] = mapped_column(sa.String(30))
    statement_descriptor: Mapped[str | None] = mapped_column(sa.String(15))
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    charge_key: Mapped[str | None] = mapped_column(sa.String(120))
    charge_status: Mapped[str | None] = mapped_column(sa.String(20))
    # When the current call was written: the sweep finds calls whose answer or job was lost.
    charge_started_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    charge_log: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=sa.text("'[]'"))
    channel_reference: Mapped[str | None] = mapped_column(sa.String(120))
    # What the payer still has to do at the channel (a bank transfer's instructions), when it said so.
    next_action: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    failure_code: Mapped[str | None] = mapped_column(sa.String(60))
    failure_message: Mapped[str | None] = mapped_column(sa.String(500))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint(f"status IN {TOPUP_STATUSES}", name="status"),
        sa.CheckConstraint(f"charge_status IN {TOPUP_CHARGE_STATUSES}", name="charge_status"),
        # A key the channel received names one top-up, as an attempt's does one payment.
        sa.UniqueConstraint("tenant_id", "charge_key"),
        sa.Index("ix_topups_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )


class Transfer(TenantOwned, db.Model):
    """Available money moved from one merchant to another of the same tenant and mode (ids `tr_...`)."""

    __tablename__ = "transfers"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    destination_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "destination_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint("destination_id <> merchant_id", name="destination"),
        sa.Index("ix_transfers_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )


class Payout(TenantOwned, db.Model):
    """A merchant's withdrawal request (ids `po_...`): the amount is held in merchant_reserved
    while pending; cancel releases it. `clearing.payouts` sends it in a bank batch (in_transit)
    and applies the bank's answer (paid, or failed and returned to the available balance)."""

    __tablename__ = "payouts"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    status: Mapped[str] = mapped_column(sa.String(10))
    description: Mapped[str | None] = mapped_column(sa.String(1000))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    canceled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    # Set by clearing: the bank batch it was sent in, and the bank's answer.
    batch_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    failure_code: Mapped[str | None] = mapped_column(sa.String(60))
    failure_message: Mapped[str | None] = mapped_column(sa.String(500))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.Index("ix_payouts_tenant_id_batch_id", "tenant_id", "batch_id"),
        sa.Index("ix_payouts_pending", "tenant_id", "created_at", postgresql_where=sa.text("status = 'pending'")),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint(f"status IN {PAYOUT_STATUSES}", name="status"),
        sa.Index("ix_payouts_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )
