"""tenant_site_for_host(): the tenant that owns a host and its status, in one call

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 16:20:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    # Still the one question answered across tenants before a tenant is known (tenant_for_host),
    # with the owner's status beside it: a request needs both (a suspended tenant's host shows the
    # suspension notice), and the merchant API nothing more, so its prologue is one statement.
    op.execute(
        """
        CREATE FUNCTION tenant_site_for_host(host text, platform_domain text)
        RETURNS TABLE (tenant_id uuid, status text)
        LANGUAGE sql STABLE
        SET app.scope = 'platform'
        AS $$
            SELECT t.id, t.status::text FROM tenants t WHERE t.id = tenant_for_host(host, platform_domain)
        $$
        """
    )


def downgrade():
    op.execute("DROP FUNCTION tenant_site_for_host(text, text)")
