"""Pooled database connections: one the server dropped is replaced before a request uses it.

The pool checks a connection with a round trip only when it has been idle for
`DB_PING_IDLE_SECONDS` (`core.db.ping_idle_connections`); a busy pool skips the check. These tests
drop the app's connections at the server (`pg_terminate_backend`, as a restart or a failover does)
and look at what the next visitor of a tenant's sign-in page gets.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core.db import db
from portal import create_app


@pytest.fixture
def app_with(app):
    """A second app on the same database with its own connection pool and ping setting."""
    built = []

    def build(idle_seconds: int):
        config = {key: app.config[key] for key in ("DATABASE_URL", "REDIS_URL", "INSTANCE_DIR", "MAIL_DIR")}
        other = create_app(
            {
                **config,
                "TESTING": True,
                "UPLOAD_DIR": app.config["UPLOAD_DIR"],
                "MAIL_BACKEND": "file",
                "PLATFORM_DOMAIN": "localhost",
                "PLATFORM_HOST": "localhost",
                "PUBLIC_PORT": "",
                "DB_PING_IDLE_SECONDS": idle_seconds,
            }
        )
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()


def _drop_pooled_connection(app, owner_engine) -> None:
    """What a server restart does to `app`'s pooled connection (its pool holds one after a request)."""
    with app.app_context():
        pid = db.session.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        db.session.remove()
        assert db.engine.pool.checkedin() == 1
    with owner_engine.begin() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


def _sign_in_page(app, host: str):
    return app.test_client().get("/login", base_url=f"http://{host}")


def test_a_connection_the_server_dropped_is_replaced_before_a_visitor_notices(app_with, make, owner_engine):
    acme = make.tenant("acme")
    checked = app_with(0)  # every checkout checks: the pool has been idle "long enough"
    assert _sign_in_page(checked, acme.host).status_code == 200

    _drop_pooled_connection(checked, owner_engine)
    page = _sign_in_page(checked, acme.host)
    assert page.status_code == 200
    assert "Acme" in page.get_data(as_text=True)


def test_a_busy_pool_skips_the_check_and_recovers_on_the_next_request(app_with, make, owner_engine):
    acme = make.tenant("acme")
    busy = app_with(3600)  # never idle long enough to be checked
    assert _sign_in_page(busy, acme.host).status_code == 200

    _drop_pooled_connection(busy, owner_engine)
    # Unchecked, the dropped connection fails the one request that meets it (TESTING lets the
    # error through instead of the error page; the transaction never started, nothing was written)...
    with pytest.raises(sa.exc.OperationalError, match="terminating connection"):
        _sign_in_page(busy, acme.host)
    # ...and the pool, told of the disconnect, replaces it: the next visitor gets the page.
    assert _sign_in_page(busy, acme.host).status_code == 200
