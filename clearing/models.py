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

RUN_KINDS = ("settlement", "payout_batch", "reconciliation")
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
    # A scheduled run's slot (e.g. the tenant's day it is for): one run per kind and slot.
    slot: Mapped[str | None] = mapped_column(sa.String(40))
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
        sa.Index(
            "uq_clearing_runs_slot",
            "tenant_id",
            "kind",
            "slot",
            unique=True,
            postgresql_where=sa.text("slot IS NOT NULL"),
        ),
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


class PayoutBatchLine(TenantOwned, db.Model):
    """Where one payout of a batch was sent: the bank account as it was when the batch was made
    (a merchant may change its account later; the file and the batch page keep the one used)."""

    __tablename__ = "payout_batch_lines"

    batch_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    payout_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    holder_name: Mapped[str] = mapped_column(sa.String(140))
    kind: Mapped[str] = mapped_column(sa.String(10))
    account_encrypted: Mapped[str] = mapped_column(sa.Text)
    account_last4: Mapped[str] = mapped_column(sa.String(4))
    bank_code: Mapped[str | None] = mapped_column(sa.String(34))
    country: Mapped[str] = mapped_column(sa.String(2))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "batch_id"], ["payout_batches.tenant_id", "payout_batches.id"], ondelete="CASCADE"
        ),
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


IMPORT_STATUSES = ("queued", "running", "succeeded", "failed")
LINE_STATUSES = ("unmatched", "matched", "long", "mismatch")
SUSPENSE_KINDS = ("long", "short", "mismatch")
SUSPENSE_STATUSES = ("open", "pending_write_off", "resolved", "written_off")


class StatementMapping(TenantOwned, db.Model):
    """A channel's saved CSV column mapping (`clearing.statement_formats.ColumnMapping` as JSON);
    `channel_account_id` None is the tenant's bank."""

    __tablename__ = "statement_mappings"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.UniqueConstraint(
            "tenant_id", "channel_account_id", name="uq_statement_mappings_source", postgresql_nulls_not_distinct=True
        ),
    )


class StatementImport(TenantOwned, db.Model):
    """One uploaded (or fetched) statement file and what its import found."""

    __tablename__ = "statement_imports"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)  # None: the tenant's bank
    livemode: Mapped[bool] = mapped_column()
    format: Mapped[str] = mapped_column(sa.String(10))
    filename: Mapped[str] = mapped_column(sa.String(255))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    storage_path: Mapped[str] = mapped_column(sa.String(500))  # outside the web root, named by ids
    status: Mapped[str] = mapped_column(sa.String(10), default="queued")
    run_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=sa.text("'{}'"))
    error_line: Mapped[int | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(sa.String(2000))
    uploaded_by: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "fingerprint"),
        sa.CheckConstraint(f"status IN {IMPORT_STATUSES!r}", name="status"),
        sa.Index("ix_statement_imports_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class StatementLine(TenantOwned, db.Model):
    """One line of a statement as imported and matched. `line_key` is the line's identity within
    its source (reference, amount, currency, day, kind and occurrence): the same line in a second,
    overlapping file is not imported again."""

    __tablename__ = "statement_lines"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    import_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    source_key: Mapped[str] = mapped_column(sa.String(40))  # the channel account id, or "bank"
    line_key: Mapped[str] = mapped_column(sa.String(32))
    line_no: Mapped[int] = mapped_column()
    reference: Mapped[str] = mapped_column(sa.String(140))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    booked_on: Mapped[date] = mapped_column(sa.Date)
    kind: Mapped[str] = mapped_column(sa.String(10))
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    status: Mapped[str] = mapped_column(sa.String(10), default="unmatched")
    record_type: Mapped[str | None] = mapped_column(sa.String(10))  # payment | refund | payout
    record_id: Mapped[str | None] = mapped_column(sa.String(40))

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "source_key", "line_key"),
        sa.CheckConstraint(f"status IN {LINE_STATUSES!r}", name="status"),
        sa.Index("ix_statement_lines_tenant_id_import_id_line_no", "tenant_id", "import_id", "line_no"),
        sa.Index("ix_statement_lines_record", "tenant_id", "record_type", "record_id"),
    )


class SuspenseItem(TenantOwned, db.Model):
    """Money reconciliation could not explain (挂账), booked to the suspense account until resolved.

    `amount` is what the item put on the suspense account (debit-positive): a statement-only line
    of +10.00 credits suspense (-1000); a platform-only payment of 10.00 debits it (+1000)."""

    __tablename__ = "suspense_items"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(10))
    status: Mapped[str] = mapped_column(sa.String(20), default="open")
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    livemode: Mapped[bool] = mapped_column()
    channel_account_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)  # None: the tenant's bank
    statement_line_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    record_type: Mapped[str | None] = mapped_column(sa.String(10))
    record_id: Mapped[str | None] = mapped_column(sa.String(40))
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    assignee: Mapped[str | None] = mapped_column(sa.String(320))
    resolution: Mapped[str | None] = mapped_column(sa.String(20))  # matched | adjusted | written_off
    resolution_note: Mapped[str | None] = mapped_column(sa.String(1000))
    requested_by: Mapped[str | None] = mapped_column(sa.String(320))
    resolved_by: Mapped[str | None] = mapped_column(sa.String(320))
    opened_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.CheckConstraint(f"kind IN {SUSPENSE_KINDS!r}", name="kind"),
        sa.CheckConstraint(f"status IN {SUSPENSE_STATUSES!r}", name="status"),
        sa.Index("ix_suspense_items_tenant_id_opened_at_id", "tenant_id", "opened_at", "id"),
        # A record is short at most once while its item is unresolved.
        sa.Index(
            "uq_suspense_items_open_short",
            "tenant_id",
            "record_type",
            "record_id",
            unique=True,
            postgresql_where=sa.text("kind = 'short' AND status IN ('open', 'pending_write_off')"),
        ),
    )


class SuspenseComment(TenantOwned, db.Model):
    __tablename__ = "suspense_comments"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    item_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    author: Mapped[str | None] = mapped_column(sa.String(320))
    body: Mapped[str] = mapped_column(sa.String(2000))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["suspense_items.tenant_id", "suspense_items.id"], ondelete="CASCADE"
        ),
        sa.Index("ix_suspense_comments_tenant_id_item_id", "tenant_id", "item_id", "created_at"),
    )


# --- reports: exports and saved filters ---------------------------------------------------------

EXPORT_KINDS = (
    "payments",
    "settlements",
    "payouts",
    "report",
    "audit",
    "merchants",
    "refunds",
    "charge_items",
    "coupons",
    "payment_links",
    "suspense",
    "statement_imports",
    "payout_batches",
)
EXPORT_FORMATS = ("csv", "xlsx")
EXPORT_STATUSES = ("queued", "running", "succeeded", "failed", "expired")


class ReportExport(TenantOwned, db.Model):
    """A list or report written to a file by a job (`clearing.exports`), with its progress and outcome.

    `merchant_id` is the merchant whose users asked (they alone download it); NULL: the tenant's
    staff asked. `filters` are the list's query-string filters as typed, so the job selects exactly
    the page's rows. `run_token` names the run that owns the export now: a later run (a retry, the
    sweep after a dead worker) takes it over and an older one stops at its next progress write.
    """

    __tablename__ = "report_exports"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    requested_by: Mapped[str] = mapped_column(sa.String(320))
    kind: Mapped[str] = mapped_column(sa.String(20))
    format: Mapped[str] = mapped_column(sa.String(4))
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=sa.text("'{}'"))
    # The language of the person who asked: the file's column headers are in it (NULL: English).
    locale: Mapped[str | None] = mapped_column(sa.String(20))
    status: Mapped[str] = mapped_column(sa.String(10), default="queued")
    rows_done: Mapped[int] = mapped_column(default=0)
    rows_total: Mapped[int | None] = mapped_column()
    file_name: Mapped[str | None] = mapped_column(sa.String(80))
    error: Mapped[str | None] = mapped_column(sa.String(2000))
    run_token: Mapped[str | None] = mapped_column(sa.String(40))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    # When the run that owns it last wrote progress: the sweep re-queues exports that went quiet.
    progressed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint(f"kind IN {EXPORT_KINDS!r}", name="kind"),
        sa.CheckConstraint(f"format IN {EXPORT_FORMATS!r}", name="format"),
        sa.CheckConstraint(f"status IN {EXPORT_STATUSES!r}", name="status"),
        sa.CheckConstraint("rows_done >= 0", name="rows_done"),
        sa.Index(
            "ix_report_exports_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"
        ),
        sa.Index(
            "ix_report_exports_active",
            "tenant_id",
            "created_at",
            postgresql_where=sa.text("status IN ('queued', 'running')"),
        ),
    )


class SavedReportFilter(TenantOwned, db.Model):
    """A named set of a list's or report's filters (the query string as typed), shared by the scope
    that saved it: the tenant's staff (`merchant_id` NULL) or one merchant's users."""

    __tablename__ = "saved_report_filters"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    page: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[str] = mapped_column(sa.String(80))
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=sa.text("'{}'"))
    created_by: Mapped[str] = mapped_column(sa.String(320))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "merchant_id",
            "page",
            "name",
            name="uq_saved_report_filters_name",
            postgresql_nulls_not_distinct=True,
        ),
    )
