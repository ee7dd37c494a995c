"""The Flask application: `create_app` reads as the table of contents of the portal."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_babel import lazy_gettext
from werkzeug.middleware.proxy_fix import ProxyFix

from core.db import ping_idle_connections
from portal import config as settings
from portal.extensions import csrf, db, login_manager, migrate
from portal.theming import ThemedFlask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = ThemedFlask(__name__)
    configure_settings(app, test_config)
    configure_logging(app)
    configure_metrics(app)
    configure_probes(app)
    configure_extensions(app)
    configure_sites(app)
    configure_theming(app)
    configure_languages(app)
    register_blueprints(app)
    configure_rate_limits(app)
    configure_security_headers(app)
    register_error_handlers(app)
    register_cli(app)
    return app


def configure_settings(app: Flask, test_config: dict[str, Any] | None) -> None:
    from core import crypto, queue
    from core import redis as shared_redis
    from portal import jobs

    app.config.from_mapping(settings.load(test_config))
    crypto.configure(app.config["ENCRYPTION_KEYS"])
    queue.configure(jobs.enqueue)
    # Core packages (channel health, the sandbox channel's state) reach the app's Redis through this hook.
    shared_redis.configure(jobs.redis_connection)
    # Importing `risk` installs its screening of each confirmation into `payments.intents.screen`.
    import risk  # noqa: F401

    if app.config["PROXY_FIX"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]


def configure_logging(app: Flask) -> None:
    """JSON lines with the request id, the tenant and the job (`portal.logs`); first, so that its
    request hooks run before any other."""
    from portal import log_redaction, logs

    logs.configure(app)
    log_redaction.install()  # no client secret in the development server's request log


def configure_metrics(app: Flask) -> None:
    """Prometheus metrics at /metrics on the platform host, and every request's latency."""
    from portal import metrics

    metrics.init_app(app)


def configure_probes(app: Flask) -> None:
    """/healthz and /readyz, answered in front of the app on every host (`portal.health`)."""
    from portal import health

    health.init_app(app)


def configure_extensions(app: Flask) -> None:
    from flask_sqlalchemy.session import Session

    from tenants import isolation

    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            ping_idle_connections(engine, app.config["DB_PING_IDLE_SECONDS"])
    migrate.init_app(app, db, directory=str(settings.ROOT / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = lazy_gettext("Please sign in to continue.")
    isolation.install(Session)


def configure_sites(app: Flask) -> None:
    from portal import sites

    sites.init_app(app)


def configure_theming(app: Flask) -> None:
    from portal import theming

    theming.init_app(app)


def configure_languages(app: Flask) -> None:
    from portal import i18n

    i18n.init_app(app)


def register_blueprints(app: Flask) -> None:
    from portal import api, auth, checkout, console, merchant, notifications, paylinks, platform

    for blueprint, prefix in (
        (auth.bp, None),
        (api.bp, "/v1"),
        (notifications.bp, "/channels"),
        (platform.bp, "/platform"),
        (console.bp, "/console"),
        (merchant.bp, "/merchant"),
        (checkout.bp, "/checkout"),
        (paylinks.bp, "/checkout/link"),
    ):
        app.register_blueprint(blueprint, url_prefix=prefix)
    # The jobs dashboard (rq-dashboard) under /platform/jobs, for platform admins only.
    from portal.platform import jobs_dashboard

    jobs_dashboard.init_app(app)


def configure_rate_limits(app: Flask) -> None:
    # After the blueprints: the limited views are wrapped where they are registered.
    from portal import limits

    limits.init_app(app)


def configure_security_headers(app: Flask) -> None:
    from portal import security

    security.init_app(app)


def register_error_handlers(app: Flask) -> None:
    from portal import errors

    errors.init_app(app)


def register_cli(app: Flask) -> None:
    from portal import cli

    cli.init_app(app)
