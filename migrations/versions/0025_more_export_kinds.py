"""exports: more kinds (audit log, merchants, refunds, charge items, coupons, payment links) and the
language of the person who asked (the file's column headers)

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-01 10:00:00.000000

"""

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

OLD_KINDS = ("payments", "settlements", "payouts", "report")
NEW_KINDS = (*OLD_KINDS, "audit", "merchants", "refunds", "charge_items", "coupons", "payment_links")


def upgrade():
    with op.batch_alter_table("report_exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=20), nullable=True))
    op.drop_constraint(op.f("ck_report_exports_kind"), "report_exports", type_="check")
    op.create_check_constraint(op.f("ck_report_exports_kind"), "report_exports", f"kind IN {NEW_KINDS!r}")


def downgrade():
    op.execute(f"DELETE FROM report_exports WHERE kind NOT IN {OLD_KINDS!r}")
    op.drop_constraint(op.f("ck_report_exports_kind"), "report_exports", type_="check")
    op.create_check_constraint(op.f("ck_report_exports_kind"), "report_exports", f"kind IN {OLD_KINDS!r}")
    with op.batch_alter_table("report_exports", schema=None) as batch_op:
        batch_op.drop_column("locale")
