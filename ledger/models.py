"""Ledger tables: accounts with a cached balance, journal entries, journal lines.

Sign convention
---------------
Every amount is an integer in the currency's minor unit. A line's `amount` is signed:

    positive = debit, negative = credit

so the lines of every journal entry sum to zero per currency, and the sum of every account's
balance per currency (and livemode) is zero too. `LedgerAccount.balance` is the sum of the
account's lines in this same convention: a positive balance is a debit balance.

Normal side of each purpose (the side on which the balance normally sits)
-------------------------------------------------------------------------
    merchant_pending     credit  liability: captured, not yet released to the merchant
    merchant_available   credit  liability: the merchant may transfer or pay it out
    merchant_reserved    credit  liability: held for a payout being prepared
    channel_receivable   debit   asset: what payment channels owe us
    channel_fees         debit   expense: what channels charged us
    fee_revenue          credit  revenue: fees charged to merchants
    tenant_revenue       credit  revenue: the tenant's share
    platform_revenue     credit  revenue: the platform's share
    suspense             debit   unexplained money; should return to zero (either sign is possible)
    payouts_in_transit   credit  liability: paid out, not yet confirmed by the bank
    bank                 debit   asset: the tenant's settlement bank account (payouts leave from it)
    write_offs           debit   expense: suspense written off with a second person's approval
    wallet               credit  liability: a member's stored value

A credit-normal account in its normal state has a negative `balance`; people never want to see
that. `LedgerAccount.natural_balance` (and `ledger.merchant_balance`) flip the sign, so a
merchant with 10.00 available sees 1000, not -1000.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

import tenants.models  # noqa: F401  (the merchants table the accounts refer to)
from core.db import db
from tenants.isolation import TenantOwned

DEBIT = 1
CREDIT = -1

NORMAL_SIDE: dict[str, int] = {
    "merchant_pending": CREDIT,
    "merchant_available": CREDIT,
    "merchant_reserved": CREDIT,
    "channel_receivable": DEBIT,
    "channel_fees": DEBIT,
    "fee_revenue": CREDIT,
    "tenant_revenue": CREDIT,
    "platform_revenue": CREDIT,
    "suspense": DEBIT,
    "payouts_in_transit": CREDIT,
    "bank": DEBIT,
    "write_offs": DEBIT,
    "wallet": CREDIT,
}
PURPOSES = tuple(NORMAL_SIDE)
# A merchant's own balances cannot exist without the merchant they belong to.
MERCHANT_PURPOSES = ("merchant_pending", "merchant_available", "merchant_reserved")


def _in(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


class LedgerAccount(TenantOwned, db.Model):
    """One account per (merchant or none, purpose, currency, livemode) within a tenant."""

    __tablename__ = "ledger_accounts"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    purpose: Mapped[str] = mapped_column(sa.String(32))
    currency: Mapped[str] = mapped_column(sa.CHAR(3))
    livemode: Mapped[bool] = mapped_column()
    balance: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default=sa.text("0"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="RESTRICT"
        ),
        sa.CheckConstraint(f"purpose IN ({_in(PURPOSES)})", name="purpose"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_upper"),
        sa.CheckConstraint(
            f"purpose NOT IN ({_in(MERCHANT_PURPOSES)}) OR merchant_id IS NOT NULL",
            name="merchant_purpose_has_merchant",
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "merchant_id",
            "purpose",
            "currency",
            "livemode",
            name="uq_ledger_accounts_identity",
            postgresql_nulls_not_distinct=True,
        ),
        # Target of the lines' foreign key, so a line cannot carry another currency than its account.
        sa.UniqueConstraint("tenant_id", "id", "currency"),
    )

    @property
    def normal_side(self) -> int:
        return NORMAL_SIDE[self.purpose]

    @property
    def natural_balance(self) -> int:
        """The cached balance signed so that its normal side is positive (what a person expects)."""
        return self.balance * self.normal_side

    def __repr__(self) -> str:
        owner = f" merchant={self.merchant_id}" if self.merchant_id else ""
        mode = "live" if self.livemode else "test"
        return f"<LedgerAccount {self.id} {self.purpose} {self.currency} {mode}{owner} balance={self.balance}>"


class JournalEntry(TenantOwned, db.Model):
    """One business event's movement of money. (tenant, kind, reference) is posted at most once."""

    __tablename__ = "journal_entries"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(80))
    reference: Mapped[str] = mapped_column(sa.String(200))
    livemode: Mapped[bool] = mapped_column()
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    lines: Mapped[list[JournalLine]] = relationship(
        primaryjoin="and_(JournalEntry.tenant_id == foreign(JournalLine.tenant_id),"
        " JournalEntry.id == foreign(JournalLine.entry_id))",
        order_by="JournalLine.amount.desc()",
        viewonly=True,
        lazy="selectin",
    )

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "kind", "reference"),
        sa.CheckConstraint("kind <> ''", name="kind_present"),
        sa.CheckConstraint("reference <> ''", name="reference_present"),
        sa.Index("ix_journal_entries_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
    )


class JournalLine(TenantOwned, db.Model):
    """A signed amount on one account: positive = debit, negative = credit, never zero."""

    __tablename__ = "journal_lines"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    entry_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    account_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.CHAR(3))

    account: Mapped[LedgerAccount] = relationship(
        primaryjoin="and_(foreign(JournalLine.tenant_id) == LedgerAccount.tenant_id,"
        " foreign(JournalLine.account_id) == LedgerAccount.id)",
        viewonly=True,
        lazy="joined",
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "entry_id"], ["journal_entries.tenant_id", "journal_entries.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "account_id", "currency"],
            ["ledger_accounts.tenant_id", "ledger_accounts.id", "ledger_accounts.currency"],
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint("amount <> 0", name="amount_nonzero"),
        sa.Index("ix_journal_lines_tenant_id_account_id", "tenant_id", "account_id"),
        sa.Index("ix_journal_lines_tenant_id_entry_id", "tenant_id", "entry_id"),
    )
