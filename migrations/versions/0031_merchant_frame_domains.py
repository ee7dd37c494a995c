"""merchants: the sites allowed to frame the merchant's hosted checkout

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-01 00:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade():
    # A column of `merchants`, which row-level security already covers.
    op.add_column(
        "merchants",
        sa.Column("frame_domains", sa.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
    )


def downgrade():
    op.drop_column("merchants", "frame_domains")
