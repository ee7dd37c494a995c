"""ledger: accounts, journal entries and lines, with row-level security

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

LEDGER_TABLES = ("ledger_accounts", "journal_entries", "journal_lines")
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
PLATFORM_SCOPE = "current_setting('app.scope', true) = 'platform'"
# Written out rather than imported from ledger.models: a migration must keep describing the
# schema as it was at this revision, whatever the models say later.
PURPOSES = (
    "merchant_pending",
    "merchant_available",
    "merchant_reserved",
    "channel_receivable",
    "channel_fees",
    "fee_revenue",
    "tenant_revenue",
    "platform_revenue",
    "suspense",
    "payouts_in_transit",
    "wallet",
)
MERCHANT_PURPOSES = ("merchant_pending", "merchant_available", "merchant_reserved")

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _in(values):
    return ", ".join(f"'{v}'" for v in values)


def upgrade():
    op.create_table(
        "ledger_accounts",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(f"purpose IN ({_in(PURPOSES)})", name=op.f("ck_ledger_accounts_purpose")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_ledger_accounts_currency_upper")),
        sa.CheckConstraint(
            f"purpose NOT IN ({_in(MERCHANT_PURPOSES)}) OR merchant_id IS NOT NULL",
            name=op.f("ck_ledger_accounts_merchant_purpose_has_merchant"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"],
            ["merchants.tenant_id", "merchants.id"],
            name=op.f("fk_ledger_accounts_tenant_id_merchant_id_merchants"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_ledger_accounts_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint(
            "tenant_id",
            "merchant_id",
            "purpose",
            "currency",
            "livemode",
            name=op.f("uq_ledger_accounts_identity"),
            postgresql_nulls_not_distinct=True,
        ),
        sa.UniqueConstraint("tenant_id", "id", "currency", name=op.f("uq_ledger_accounts_tenant_id_id_currency")),
    )
    op.create_table(
        "journal_entries",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=80), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind <> ''", name=op.f("ck_journal_entries_kind_present")),
        sa.CheckConstraint("reference <> ''", name=op.f("ck_journal_entries_reference_present")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_journal_entries_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_journal_entries")),
        sa.UniqueConstraint("tenant_id", "kind", "reference", name=op.f("uq_journal_entries_tenant_id_kind_reference")),
    )
    op.create_index(
        "ix_journal_entries_tenant_id_created_at_id", "journal_entries", ["tenant_id", "created_at", "id"], unique=False
    )
    op.create_table(
        "journal_lines",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.CHAR(length=3), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_journal_lines_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "account_id", "currency"],
            ["ledger_accounts.tenant_id", "ledger_accounts.id", "ledger_accounts.currency"],
            name=op.f("fk_journal_lines_tenant_id_account_id_currency_ledger_accounts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "entry_id"],
            ["journal_entries.tenant_id", "journal_entries.id"],
            name=op.f("fk_journal_lines_tenant_id_entry_id_journal_entries"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_journal_lines_tenant_id_tenants"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_journal_lines")),
    )
    op.create_index("ix_journal_lines_tenant_id_account_id", "journal_lines", ["tenant_id", "account_id"], unique=False)
    op.create_index("ix_journal_lines_tenant_id_entry_id", "journal_lines", ["tenant_id", "entry_id"], unique=False)

    rule = f"tenant_id = {CURRENT_TENANT} OR {PLATFORM_SCOPE}"
    for table in LEDGER_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({rule}) WITH CHECK ({rule})")


def downgrade():
    op.drop_index("ix_journal_lines_tenant_id_entry_id", table_name="journal_lines")
    op.drop_index("ix_journal_lines_tenant_id_account_id", table_name="journal_lines")
    op.drop_table("journal_lines")
    op.drop_index("ix_journal_entries_tenant_id_created_at_id", table_name="journal_entries")
    op.drop_table("journal_entries")
    op.drop_table("ledger_accounts")
