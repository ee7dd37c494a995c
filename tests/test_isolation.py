"""Isolation proven at the database: RLS on every tenant-owned table, as the app's own role."""

import uuid

import pytest
import sqlalchemy as sa

from core.db import db
from tenants.isolation import platform_scope, tenant_context
from tenants.models import Merchant, User


@pytest.fixture
def two_tenants(make):
    a = make.tenant("alpha")
    b = make.tenant("beta", theme="midnight")
    make.merchant(a, "Alpha Shop", "owner@alpha-shop.example.com")
    make.merchant(b, "Beta Shop", "owner@beta-shop.example.com")
    return a, b


def _app_connection(app):
    """A raw connection as the app's role, the same one the web app and workers use."""
    return db.engine.connect()


def _set_tenant(conn, tenant_id):
    conn.execute(sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant_id)})


def test_every_tenant_table_has_rls_enabled_and_forced(ctx, owner_engine, tenant_tables):
    assert {"users", "merchants", "tenant_brands", "tenant_domains", "audit_events", "login_attempts"} <= set(
        tenant_tables
    )
    with owner_engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.text("SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname = ANY(:t)"),
                {"t": tenant_tables},
            ).all()
        )
    assert rows == {name: True for name in tenant_tables}


def test_tenant_id_is_not_null_and_leads_the_primary_key(app, tenant_tables):
    for name in tenant_tables:
        table = db.metadata.tables[name]
        assert table.c.tenant_id.nullable is False, name
        assert list(table.primary_key.columns)[0].name == "tenant_id", name


def test_raw_select_sees_only_the_current_tenant(app, ctx, two_tenants, tenant_tables):
    a, b = two_tenants
    with _app_connection(app) as conn, conn.begin():
        _set_tenant(conn, a.id)
        for name in tenant_tables:
            tenant_ids = set(conn.execute(sa.text(f"SELECT tenant_id FROM {name}")).scalars())
            assert b.id not in tenant_ids, f"{name} shows rows of another tenant"
        # The tenant's own rows are there (the check above is not vacuous).
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() >= 2
        assert conn.execute(sa.text("SELECT count(*) FROM merchants")).scalar() == 1
        assert set(conn.execute(sa.text("SELECT id FROM tenants")).scalars()) == {a.id}


def test_no_tenant_set_sees_nothing(app, ctx, two_tenants, tenant_tables):
    with _app_connection(app) as conn, conn.begin():
        for name in [*tenant_tables, "tenants", "platform_users"]:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() == 0, name


def test_insert_with_another_tenants_id_fails(app, ctx, two_tenants):
    a, b = two_tenants
    with _app_connection(app) as conn, conn.begin():
        _set_tenant(conn, a.id)
        with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
            conn.execute(
                sa.text("INSERT INTO merchants (tenant_id, id, name, status) VALUES (:t, :i, 'Evil', 'active')"),
                {"t": b.id, "i": uuid.uuid4()},
            )


def test_update_cannot_move_a_row_to_another_tenant(app, ctx, two_tenants):
    a, b = two_tenants
    with _app_connection(app) as conn, conn.begin():
        _set_tenant(conn, a.id)
        with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
            conn.execute(sa.text("UPDATE merchants SET tenant_id = :b"), {"b": b.id})


@pytest.mark.parametrize("table", ["tenants", "tenant_domains", "users"])
def test_tenant_cannot_create_rows_for_others_or_new_tenants(app, ctx, two_tenants, table):
    a, b = two_tenants
    statements = {
        "tenants": (
            "INSERT INTO tenants (id, slug, name, status, time_zone, default_locale) "
            "VALUES (:i, 'gamma', 'Gamma', 'active', 'UTC', 'en')"
        ),
        "tenant_domains": (
            "INSERT INTO tenant_domains (tenant_id, domain, is_primary) VALUES (:b, 'evil.example.com', false)"
        ),
        "users": (
            "INSERT INTO users (tenant_id, id, email, name, role, is_active) "
            "VALUES (:b, :i, 'x@example.com', '', 'admin', true)"
        ),
    }
    with _app_connection(app) as conn, conn.begin():
        _set_tenant(conn, a.id)
        with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
            conn.execute(sa.text(statements[table]), {"b": b.id, "i": uuid.uuid4()})


def test_orm_filters_by_the_current_tenant(app, ctx, two_tenants):
    a, b = two_tenants
    with tenant_context(db.session, a.id):
        names = db.session.execute(sa.select(Merchant.name)).scalars().all()
        assert names == ["Alpha Shop"]
        # Even asking for B's rows explicitly returns nothing.
        assert db.session.execute(sa.select(User).where(User.tenant_id == b.id)).all() == []


def test_platform_scope_is_the_one_way_to_see_every_tenant(app, ctx, two_tenants):
    with platform_scope(db.session):
        names = sorted(db.session.execute(sa.select(Merchant.name)).scalars())
    assert names == ["Alpha Shop", "Beta Shop"]


def test_tenant_setting_is_transaction_local(app, ctx, two_tenants):
    a, _ = two_tenants
    with _app_connection(app) as conn:
        with conn.begin():
            _set_tenant(conn, a.id)
            assert conn.execute(sa.text("SELECT count(*) FROM merchants")).scalar() == 1
        with conn.begin():
            assert conn.execute(sa.text("SELECT count(*) FROM merchants")).scalar() == 0


def test_app_role_owns_nothing_and_cannot_bypass_rls(app, ctx):
    with db.engine.connect() as conn:
        role = conn.execute(sa.text("SELECT current_user")).scalar()
        flags = conn.execute(sa.text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")).one()
        owned = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user")
        ).scalar()
    assert role == app.config["APP_DB_ROLE"]
    assert tuple(flags) == (False, False)
    assert owned == 0
