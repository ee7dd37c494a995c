"""two-factor sign-in: TOTP secrets and recovery codes per account; a tenant may require it

Revision ID: 0028
Revises: 0027
Create Date: 2026-11-30 23:20:00.000000

`users` and `platform_users` gain `totp_secret` (encrypted with `core.crypto`), `totp_enabled_at`
(NULL while an enrolment is pending or 2FA is off), `totp_last_step` (the time step of the last
accepted code, to refuse a replay) and `recovery_code_hashes` (argon2 hashes, a JSON list). Both
tables keep their existing row-level security (users: the tenant's policy; platform_users:
platform scope only). `tenants` gains `require_2fa_staff` and `require_2fa_merchants`; the tenant
may change them on its own row (the trigger of 0023 guards only the identity columns).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

ACCOUNT_TABLES = ("users", "platform_users")


def upgrade():
    for table in ACCOUNT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("totp_secret", sa.String(length=300), nullable=True))
            batch_op.add_column(sa.Column("totp_enabled_at", sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
            batch_op.add_column(
                sa.Column(
                    "recovery_code_hashes",
                    postgresql.JSONB(astext_type=sa.Text()),
                    server_default=sa.text("'[]'::jsonb"),
                    nullable=False,
                )
            )
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("require_2fa_staff", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(
            sa.Column("require_2fa_merchants", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("require_2fa_merchants")
        batch_op.drop_column("require_2fa_staff")
    for table in reversed(ACCOUNT_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("recovery_code_hashes")
            batch_op.drop_column("totp_last_step")
            batch_op.drop_column("totp_enabled_at")
            batch_op.drop_column("totp_secret")
