"""merchant api keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

TENANT_TABLES = ("api_keys",)
CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
PLATFORM_SCOPE = "current_setting('app.scope', true) = 'platform'"

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('api_keys',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.Uuid(), nullable=False),
    sa.Column('mode', sa.String(length=4), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=8), nullable=False),
    sa.Column('last4', sa.String(length=4), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('created_by', sa.Uuid(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name=op.f('ck_api_keys_key_hash')),
    sa.CheckConstraint("mode IN ('test', 'live')", name=op.f('ck_api_keys_mode')),
    sa.CheckConstraint("prefix = 'sk_' || mode || '_'", name=op.f('ck_api_keys_prefix')),
    sa.CheckConstraint('char_length(last4) = 4', name=op.f('ck_api_keys_last4')),
    sa.ForeignKeyConstraint(['tenant_id', 'merchant_id'], ['merchants.tenant_id', 'merchants.id'], name=op.f('fk_api_keys_tenant_id_merchant_id_merchants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_api_keys_tenant_id_tenants'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('tenant_id', 'key_hash', name=op.f('uq_api_keys_tenant_id_key_hash'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index('ix_api_keys_tenant_id_merchant_id', ['tenant_id', 'merchant_id'], unique=False)

    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        rule = f"tenant_id = {CURRENT_TENANT} OR {PLATFORM_SCOPE}"
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({rule}) WITH CHECK ({rule})")


def downgrade():
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_api_keys_tenant_id_merchant_id')

    op.drop_table('api_keys')
