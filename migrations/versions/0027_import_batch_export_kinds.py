"""exports: the console's statement imports and payout batches

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-01 13:00:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

OLD_KINDS = (
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
)
NEW_KINDS = (*OLD_KINDS, "statement_imports", "payout_batches")


def upgrade():
    op.drop_constraint(op.f("ck_report_exports_kind"), "report_exports", type_="check")
    op.create_check_constraint(op.f("ck_report_exports_kind"), "report_exports", f"kind IN {NEW_KINDS!r}")


def downgrade():
    op.execute(f"DELETE FROM report_exports WHERE kind NOT IN {OLD_KINDS!r}")
    op.drop_constraint(op.f("ck_report_exports_kind"), "report_exports", type_="check")
    op.create_check_constraint(op.f("ck_report_exports_kind"), "report_exports", f"kind IN {OLD_KINDS!r}")
