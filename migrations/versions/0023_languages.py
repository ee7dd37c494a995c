"""languages: a person's chosen language; a tenant admin sets the tenant's language and time zone

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30 19:56:56.126848

`users.locale` and `platform_users.locale` ('en', 'zh'; NULL follows the tenant's default).
`tenants.default_locale` is checked to the two languages. A tenant may now update its own row,
but only `default_locale` and `time_zone`: a policy admits the update of the tenant's own row
and a trigger refuses any other column changing outside platform scope (a tenant can never
rename, re-slug or reactivate itself).
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

CURRENT_TENANT = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
PLATFORM_SCOPE = "current_setting('app.scope', true) = 'platform'"


def upgrade():
    with op.batch_alter_table("platform_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=10), nullable=True))
        batch_op.create_check_constraint("locale", "locale IN ('en', 'zh')")

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=10), nullable=True))
        batch_op.create_check_constraint("locale", "locale IN ('en', 'zh')")

    op.execute("UPDATE tenants SET default_locale = CASE WHEN default_locale LIKE 'zh%' THEN 'zh' ELSE 'en' END")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.create_check_constraint("default_locale", "default_locale IN ('en', 'zh')")

    op.execute(
        f"CREATE POLICY tenant_sets_preferences ON tenants FOR UPDATE "
        f"USING (id = {CURRENT_TENANT}) WITH CHECK (id = {CURRENT_TENANT})"
    )
    op.execute(
        f"""
        CREATE FUNCTION tenants_only_preferences() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {PLATFORM_SCOPE} THEN
                RETURN NEW;
            END IF;
            IF (NEW.id, NEW.slug, NEW.name, NEW.status, NEW.created_at, NEW.suspended_at)
               IS DISTINCT FROM (OLD.id, OLD.slug, OLD.name, OLD.status, OLD.created_at, OLD.suspended_at) THEN
                RAISE EXCEPTION 'a tenant may change only its default language and time zone'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER tenants_only_preferences BEFORE UPDATE ON tenants "
        "FOR EACH ROW EXECUTE FUNCTION tenants_only_preferences()"
    )


def downgrade():
    op.execute("DROP TRIGGER tenants_only_preferences ON tenants")
    op.execute("DROP FUNCTION tenants_only_preferences()")
    op.execute("DROP POLICY tenant_sets_preferences ON tenants")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint("default_locale", type_="check")

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("locale", type_="check")
        batch_op.drop_column("locale")

    with op.batch_alter_table("platform_users", schema=None) as batch_op:
        batch_op.drop_constraint("locale", type_="check")
        batch_op.drop_column("locale")
