"""idempotency key leases and recovery points; webhook endpoint metadata

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("idempotency_keys", sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("idempotency_keys", sa.Column("object_id", sa.String(length=40), nullable=True))
    # A request still running while this runs keeps its claim: its lease starts when it began.
    op.execute("UPDATE idempotency_keys SET locked_at = created_at WHERE status = 'in_progress'")
    op.add_column(
        "webhook_endpoints",
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    )


def downgrade():
    op.drop_column("webhook_endpoints", "metadata")
    op.drop_column("idempotency_keys", "object_id")
    op.drop_column("idempotency_keys", "locked_at")
