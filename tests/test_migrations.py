"""The schema comes only from the migrations, and the models agree with them."""

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy.engine import make_url

from core.db import db
from portal import create_app


@pytest.fixture
def scratch_app(app, owner_url):
    """An app on a database of its own, created empty for this test."""
    server = make_url(owner_url)
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"{server.database}_migrations"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    scratch = create_app({"TESTING": True, "DATABASE_URL": url, "REDIS_URL": app.config["REDIS_URL"]})
    yield scratch, url
    with scratch.app_context():
        db.engine.dispose()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_builds_every_table_and_downgrade_removes_them(scratch_app):
    scratch, url = scratch_app
    assert _tables(url) == set()
    with scratch.app_context():
        upgrade()
    assert _tables(url) == set(db.metadata.tables)
    with scratch.app_context():
        downgrade(revision="base")
    assert _tables(url) == set()
    with scratch.app_context():
        upgrade()
    assert _tables(url) == set(db.metadata.tables)


def test_models_and_migrations_agree(owner_engine):
    with owner_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_tenant_for_host_resolves_domains_and_subdomains_only(app, make, owner_engine, ctx):
    tenant = make.tenant("acme", domains=["pay.acme-shop.example.com"])
    with db.engine.connect() as conn:

        def lookup(host):
            return conn.execute(sa.text("SELECT tenant_for_host(:h, 'localhost')"), {"h": host}).scalar()

        assert lookup("pay.acme-shop.example.com") == tenant.id
        assert lookup("acme.localhost") == tenant.id
        assert lookup("acme.evil.example.com") is None
        assert lookup("localhost") is None
        # The function's platform scope does not leak into the caller's transaction.
        assert conn.execute(sa.text("SELECT count(*) FROM tenants")).scalar() == 0
